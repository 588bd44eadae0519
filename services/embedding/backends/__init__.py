"""Runtimes that execute the exported embedding graph, behind one small interface."""
