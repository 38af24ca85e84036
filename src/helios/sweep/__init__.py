"""Sweeps: expand eval grids into reproducible runs, execute them, and report the best settings."""
