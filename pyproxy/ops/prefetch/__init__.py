"""`pyproxy prefetch`, by concern: locks (lock files), targets (which files a platform needs),
resolve (pip), run (downloads), progress."""
