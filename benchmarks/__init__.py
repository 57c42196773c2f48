"""pyproxy's side-by-side benchmark, outside the installed package: see benchmarks/README.md."""
