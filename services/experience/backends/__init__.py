"""Storage engines for the pool, behind one small interface."""
