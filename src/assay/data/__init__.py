"""Datasets, loaders, validation, and the demo data and model."""
from assay.data.dataset import Dataset, validate
from assay.data.loaders import load_dataset

__all__ = ["Dataset", "load_dataset", "validate"]
