"""ddiscover's benchmarks: the harness that starts processes, and the measured scenarios."""
