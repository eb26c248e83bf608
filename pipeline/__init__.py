"""CRS / ICANS risk pipeline: stages, CLI, config and the cohort contract."""

__version__ = "0.1.0"
