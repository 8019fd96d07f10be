"""Datasets for evaluation, calibration and fine-tuning, named by one spec string.

`load_dataset(spec)` returns an EdgeDataset whose items are (x float32, y int64 0-d; -1 = unlabeled);
see edgecomp.data.spec for the spec forms.
"""

from edgecomp.data.dataset import UNLABELED, ArrayDataset, EdgeDataset, SubsetDataset
from edgecomp.data.helpers import make_loader, split, subset, take_batch
from edgecomp.data.spec import SPEC_HELP, load_dataset

__all__ = [
    "ArrayDataset",
    "EdgeDataset",
    "SPEC_HELP",
    "SubsetDataset",
    "UNLABELED",
    "load_dataset",
    "make_loader",
    "split",
    "subset",
    "take_batch",
]
