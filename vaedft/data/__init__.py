"""Data layer: dataset generation, the HDF5 store, the shipped Snyder 2012 test set, and the authors'
Zenodo datasets (:mod:`vaedft.data.zenodo` fetches them, :mod:`vaedft.data.convert` converts them)."""

from .generate import TEST_SETS, default_chunk, generate_dataset
from .snyder import load_snyder2012
from .store import DatasetError, read_arrays, read_attrs, resolve_check, testbed_from_attrs, validate_dataset

__all__ = [
    "DatasetError", "TEST_SETS", "default_chunk", "generate_dataset", "load_snyder2012",
    "read_arrays", "read_attrs", "resolve_check", "testbed_from_attrs", "validate_dataset",
]
