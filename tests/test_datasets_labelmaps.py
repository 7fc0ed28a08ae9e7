"""Label-map folders (CCP's layout): one sample per label, named from labels.txt, plus the union of the labels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import finecut
from finecut.datasets import open_dataset


def _ccp_like(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "labels.txt").write_text("0 null\n1 hair\n2 skin\n3 shoes\n")
    image = np.full((30, 20, 3), 90, np.uint8)
    labels = np.zeros((30, 20), np.uint8)
    labels[2:6, 5:15] = 1
    labels[6:20, 4:16] = 2
    labels[25:28, 2:6] = 3
    labels[25:28, 12:16] = 3  # two shoes: one label, two parts
    cv2.imwrite(str(root / "images" / "0001.jpg"), image)
    cv2.imwrite(str(root / "masks" / "0001.png"), labels)
    return root


def test_label_map_folder_with_union_and_names(tmp_path: Path) -> None:
    root = _ccp_like(tmp_path / "ccp")
    ds = open_dataset(root, kind="folder", images_dir="images", masks_dir="masks", objects="instances",
                      union_object=True, label_names="labels.txt")
    names = [r.name for r in ds.refs]
    assert names == ["0001#1", "0001#2", "0001#3", "0001#all"]
    assert [r.meta.get("label") for r in ds.refs[:3]] == ["hair", "skin", "shoes"]
    person = ds[3].gt
    assert person.sum() == (4 * 10 + 14 * 12 + 2 * 3 * 4) and ds[2].gt.sum() == 24


def test_union_only_gives_each_image_its_whole_object(tmp_path: Path) -> None:
    root = _ccp_like(tmp_path / "ccp")
    single = np.zeros((30, 20), np.uint8)
    single[5:25, 5:15] = 2  # a photo labelled with one id: that id is the whole object
    cv2.imwrite(str(root / "images" / "0002.jpg"), np.full((30, 20, 3), 90, np.uint8))
    cv2.imwrite(str(root / "masks" / "0002.png"), single)
    ds = open_dataset(root, kind="folder", images_dir="images", masks_dir="masks", objects="instances",
                      union_only=True, label_names="labels.txt")
    assert [r.name for r in ds.refs] == ["0001#all", "0002#2"]
    assert ds[0].gt.sum() == (4 * 10 + 14 * 12 + 2 * 3 * 4) and ds[1].gt.sum() == 200
    with pytest.raises(finecut.FinecutError, match="union_only needs objects='instances'"):
        open_dataset(root, kind="folder", images_dir="images", masks_dir="masks", union_only=True)


def test_label_names_file_errors(tmp_path: Path) -> None:
    root = _ccp_like(tmp_path / "ccp")
    (root / "labels.txt").write_text("hair 1\n")
    with pytest.raises(finecut.FinecutError, match=r"labels.txt:1: expected 'ID NAME'"):
        open_dataset(root, kind="folder", images_dir="images", masks_dir="masks", objects="instances",
                     label_names="labels.txt")
    with pytest.raises(finecut.FinecutError, match="label names file not found"):
        open_dataset(root, kind="folder", images_dir="images", masks_dir="masks", objects="instances",
                     label_names="missing.txt")


def test_known_training_sets_are_registered() -> None:
    from finecut.datasets.registry import known_dataset

    for name in ("ECSSD", "CCP", "CCP-person"):
        entry = known_dataset(name)
        assert entry is not None and entry.role == "train"
