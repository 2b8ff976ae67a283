"""Datasets, loaders, validation, and the demo data and model."""
from assay.data.dataset import Dataset, validate

__all__ = ["Dataset", "validate"]
