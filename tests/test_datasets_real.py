"""The readers on the real sets in ../shared/data: exact counts and a few samples of each (skipped without data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finecut.datasets import Dataset, open_dataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")


def check_sample(ds: Dataset, index: int, allowed=frozenset({0, 1})) -> np.ndarray:
    s = ds[index]
    assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
    assert s.gt.dtype == np.int8 and s.gt.shape == s.image.shape[:2]
    values = set(np.unique(s.gt).tolist())
    assert values <= set(allowed) and 1 in values, (s.name, values)
    return s.gt


def spread(n: int, k: int = 3) -> list[int]:
    return sorted({0, n // 2, n - 1})[:k]


def test_grabcut_50_with_ignore_bands():
    ds = open_dataset("GrabCut", root=DATA)
    assert len(ds) == 50
    exts = {r.image_path.suffix for r in ds.refs}
    assert {".jpg", ".bmp", ".JPG"} <= exts  # mixed extensions, matched by stem
    names = [r.name for r in ds.refs]
    banded = check_sample(ds, names.index("124080"), allowed={-1, 0, 1})
    assert 0 < (banded == -1).mean() < 0.05  # the 128 boundary band is ignore
    plain = check_sample(ds, names.index("106024"), allowed={0, 1})  # one of the 8 masks without a band
    assert plain.shape == (321, 481)


@pytest.mark.parametrize(("name", "count"), [("Berkeley", 100), ("ECSSD", 948)])
def test_binary_mask_sets(name: str, count: int):
    """Berkeley's 100 objects on 96 images; ECSSD's 948 salient-object photos (a training set)."""
    ds = open_dataset(name, root=DATA)
    assert len(ds) == count
    for i in spread(len(ds)):
        check_sample(ds, i)


def test_davis_345_all_objects_merged():
    ds = open_dataset("DAVIS", root=DATA)
    assert len(ds) == 345 and len(open_dataset("DAVIS345", root=DATA)) == 345
    gt = check_sample(ds, 0)
    assert gt.shape == (480, 854)


def test_drive_test_20_with_fov_and_training_20():
    ds = open_dataset("DRIVE", root=DATA)
    assert len(ds) == 20
    s = ds[0]
    assert s.region is not None and s.region.dtype == bool and 0.6 < s.region.mean() < 0.75
    assert 0.05 < (s.gt == 1).mean() < 0.15
    second = open_dataset("DRIVE", root=DATA, annotator=2)[0]  # palette {0,1} GIFs
    assert 0.05 < (second.gt == 1).mean() < 0.15
    assert len(open_dataset("DRIVE", root=DATA, split="training")) == 20


def test_crackforest_118():
    ds = open_dataset("CrackForest", root=DATA)
    assert len(ds) == 118
    gt = check_sample(ds, 0)
    assert gt.shape == (320, 480) and (gt == 1).mean() < 0.1


def test_coco128_panoptic_segments():
    ds = open_dataset("COCO128", root=DATA)
    assert len(ds.groups()) == 200 and len(ds) == 2178
    for i in spread(len(ds)):
        gt = check_sample(ds, i)
        assert int((gt == 1).sum()) == ds.refs[i].meta["area"]  # ids decoded exactly as the JSON counts them


def test_weizmann_horse_and_msra10k():
    horses = open_dataset("WeizmannHorse", root=DATA)
    assert len(horses) == 328
    for i in spread(len(horses)):
        check_sample(horses, i)  # masks resized to the (larger) rgb photos
    msra = open_dataset("MSRA10K", root=DATA)
    assert len(msra) == 168
    for i in spread(len(msra)):
        check_sample(msra, i)


def test_bsds500_regions():
    ds = open_dataset("BSDS500", root=DATA, split="val")
    assert len(ds.groups()) == 46 and len(ds) > 46 * 10
    for i in spread(len(ds)):
        gt = check_sample(ds, i)
        assert 0.01 <= (gt == 1).mean() <= 0.8


def test_ccp_labels_and_person_union():
    ds = open_dataset("CCP", root=DATA)
    images = {r.meta["image_id"] for r in ds.refs}
    assert len(images) == 1003  # of 1,004 photos; 0536's label map is all background
    first = [r for r in ds.refs if r.meta["image_id"] == "0001"]
    assert first[-1].name == "0001#all" and all("label" in r.meta for r in first[:-1])
    person = check_sample(ds, ds.refs.index(first[-1]))
    parts = sum(check_sample(ds, ds.refs.index(r)).astype(np.int64) for r in first[:-1])
    assert parts.max() == 1 and not (parts & (person != 1)).any()  # labels do not overlap; all inside the person
    assert (person == 1).sum() - parts.sum() < 64 * 58  # only labels under min_area (64 px) are not own samples
