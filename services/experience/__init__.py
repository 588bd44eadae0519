"""The RoSE experience pool: record answered questions, orchestrate demonstrations for new ones."""
