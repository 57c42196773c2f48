"""`pyproxy prefetch`, by concern: locks (lock files), resolve (pip), run (downloads), progress."""
