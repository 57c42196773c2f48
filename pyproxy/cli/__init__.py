"""The `pyproxy` command: argparse front ends over the services, nothing else."""
