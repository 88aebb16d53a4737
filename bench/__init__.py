"""pfcbench: reproducible Partial FC training-throughput reports."""

__version__ = "0.1.0"
