"""The `nccurate bench` benchmarks: commands that print numbers."""
