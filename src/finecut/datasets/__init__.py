"""Dataset readers: benchmarks (GrabCut, Berkeley, DAVIS, DRIVE, CrackForest, COCO-MVal, SBD, PASCAL VOC), training
sets (COCO panoptic/instances, BSDS500 regions, image + mask folders) and a user's own folder of images + masks.

``open_dataset(name_or_path)`` is the entry point; every sample is one object with ``gt`` int8 (1 object,
0 background, -1 ignore) and an RGB uint8 image.
"""

from finecut.datasets.base import Dataset, Sample, SampleRef
from finecut.datasets.benchmarks import read_berkeley, read_crackforest, read_davis, read_drive, read_grabcut
from finecut.datasets.cache import FileCache
from finecut.datasets.coco import read_coco_instances, read_coco_panoptic
from finecut.datasets.folders import read_folder
from finecut.datasets.instances import read_bsds, read_sbd, read_voc
from finecut.datasets.registry import (
    KINDS,
    KNOWN,
    default_data_root,
    detect_kind,
    list_datasets,
    list_kinds,
    open_dataset,
)

__all__ = [
    "Dataset",
    "FileCache",
    "KINDS",
    "KNOWN",
    "Sample",
    "SampleRef",
    "default_data_root",
    "detect_kind",
    "list_datasets",
    "list_kinds",
    "open_dataset",
    "read_berkeley",
    "read_bsds",
    "read_coco_instances",
    "read_coco_panoptic",
    "read_crackforest",
    "read_davis",
    "read_drive",
    "read_folder",
    "read_grabcut",
    "read_sbd",
    "read_voc",
]
