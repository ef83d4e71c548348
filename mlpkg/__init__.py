"""mlpkg: a content-addressed package manager for reproducible ML benchmarking."""

__version__ = "0.1.0"
