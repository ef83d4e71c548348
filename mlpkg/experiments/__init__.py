"""Experiments: sweeps, comparisons of runs, reports (docs/experiments.md)."""
