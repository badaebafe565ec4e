"""Benchmark harness (``vaedft-bench``): experiments, profiles, reports, regression checks."""
