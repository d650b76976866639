"""Data for granvae: generators, the MVTec folder loader, validation and the dataset store.

The in-memory contract (Split, DatasetMeta) is documented in docs/contracts.md, "Data".
"""

from granvae.data.base import DatasetMeta, DataValidationError, FactorDataset, Split
from granvae.data.folder import import_mvtec, load_mvtec
from granvae.data.generate import generate
from granvae.data.reader import SplitReader, open_split
from granvae.data.store import (
    check_dataset,
    dataset_version,
    load_dataset,
    load_split,
    read_manifest,
    write_dataset,
    write_dataset_streamed,
)
from granvae.data.validate import validate_dataset, validate_folder, validate_split

__all__ = [
    "DataValidationError",
    "DatasetMeta",
    "FactorDataset",
    "Split",
    "SplitReader",
    "check_dataset",
    "dataset_version",
    "generate",
    "import_mvtec",
    "load_dataset",
    "load_mvtec",
    "load_split",
    "open_split",
    "read_manifest",
    "validate_dataset",
    "validate_folder",
    "validate_split",
    "write_dataset",
    "write_dataset_streamed",
]
