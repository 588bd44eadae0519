"""The embedding service: texts to all-MiniLM-L6-v2 sentence vectors."""
