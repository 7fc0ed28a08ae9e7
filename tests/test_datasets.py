"""Dataset readers on tiny fixtures written here (PNG/JPG/BMP/GIF/.mat/JSON): encodings, layouts, errors, caching."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

from finecut.datasets import (
    Dataset,
    FileCache,
    Sample,
    detect_kind,
    list_datasets,
    list_kinds,
    open_dataset,
    read_bsds,
    read_coco_instances,
    read_coco_panoptic,
    read_folder,
    read_voc,
)
from finecut.datasets import registry
from finecut.datasets.labels import gt_davis, gt_ritm_grabcut, read_index_label, read_label, voc_colormap
from finecut.datasets.matching import StemRule, infer_stem_rule
from finecut.errors import FinecutError

H, W = 12, 16


# ------------------------------------------------------------------------------------------------------ helpers

def photo(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB image with OpenCV (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix.lower(), rgb[..., ::-1].copy())
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def write_gray(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix.lower(), arr.astype(np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def write_palette(path: Path, ids: np.ndarray) -> Path:
    """A palette (mode P) PNG/GIF with the VOC colour map."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette(voc_colormap().ravel().tolist())
    img.save(path)
    return path


def blob(y0: int, y1: int, x0: int, x1: int, value: int = 255, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = value
    return m


# ------------------------------------------------------------------------------------------------ pure encodings

def test_ritm_grabcut_encoding_channel0_and_ignore():
    label = np.zeros((2, 4, 3), np.uint8)
    label[0, :, 0] = [0, 128, 129, 255]
    label[1, :, 0] = [1, 2, 127, 200]
    label[1, :, 1:] = 255  # other channels are ignored (RITM reads channel 0 only)
    gt = gt_ritm_grabcut(label)
    assert gt.dtype == np.int8
    assert gt.tolist() == [[0, -1, 1, 1], [1, 0, 0, 1]]


def test_davis_encoding_every_nonzero_is_object():
    label = np.zeros((1, 5, 3), np.uint8)
    label[0, 1] = (0, 0, 128)
    label[0, 2] = (0, 128, 0)
    label[0, 3] = (255, 255, 255)
    label[0, 4] = (1, 0, 0)
    assert gt_davis(label).tolist() == [[0, 1, 1, 1, 1]]


def test_infer_stem_rule_suffix_prefix_and_exact():
    assert infer_stem_rule(["a", "b"], ["a", "b"]) == StemRule()
    assert infer_stem_rule(["a", "b", "c"], ["a_mask", "b_mask", "c_mask", "zz"]) == StemRule(suffix="_mask")
    assert infer_stem_rule(["01", "02"], ["gt_01", "gt_02"]) == StemRule(prefix="gt_")
    assert StemRule("gt_", "_m").image_stem("gt_x_m") == "x"


# --------------------------------------------------------------------------------------------------- GrabCut

def make_grabcut(root: Path) -> Path:
    gc = root / "GrabCut"
    for stem, ext in (("106024", ".jpg"), ("banana", ".bmp"), ("Person", ".JPG")):
        write_image(gc / "data_GT" / f"{stem}{ext}", photo())
        mask = blob(2, 8, 3, 10)
        mask[1, 2:11] = 128  # ignore band
        bgr = np.stack([mask, mask // 2, mask // 2], axis=2)  # channel 0 (blue) is the one RITM reads
        write_image(gc / "boundary_GT" / f"{stem}.bmp", bgr[..., ::-1])
    return gc


def test_grabcut_reader_mixed_extensions_and_ignore(tmp_path):
    gc = make_grabcut(tmp_path)
    ds = open_dataset("GrabCut", root=tmp_path)
    assert len(ds) == 3 and ds.name == "GrabCut"
    assert [r.image_path.suffix for r in ds.refs] == [".jpg", ".JPG", ".bmp"]  # sorted like RITM
    s = ds[2]
    assert isinstance(s, Sample) and s.name == "banana"
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.gt.dtype == np.int8 and s.gt.shape == (H, W)
    assert (s.gt[1, 2:11] == -1).all() and (s.gt[2:8, 3:10] == 1).all() and s.gt[0, 0] == 0
    assert s.meta["mask_path"].endswith("banana.bmp") and s.meta["image_path"].endswith("banana.bmp")
    assert detect_kind(gc) == "grabcut"
    assert len(open_dataset(gc)) == 3


def test_berkeley_reader_threshold_128(tmp_path):
    bk = tmp_path / "benchmarks" / "Berkeley"
    write_image(bk / "images" / "1.jpg", photo())
    m = np.zeros((H, W), np.uint8)
    m[0, 0:4] = [100, 128, 197, 243]
    write_image(bk / "masks" / "1.png", np.stack([m] * 3, axis=2))
    ds = open_dataset("Berkeley", root=tmp_path)
    assert len(ds) == 1
    assert ds[0].gt[0, :5].tolist() == [0, -1, 1, 1, 0]


# ------------------------------------------------------------------------------------------------------ DAVIS

def test_davis_reader_merges_all_ids_including_255(tmp_path):
    dv = tmp_path / "DAVIS345"
    ids = np.zeros((H, W), np.uint8)
    ids[1:3, 1:3], ids[5:7, 5:7], ids[9, 9] = 1, 2, 255
    write_image(dv / "img" / "000.jpg", photo())
    write_palette(dv / "gt" / "000.png", ids)
    ds = open_dataset(dv)
    assert detect_kind(dv) == "davis" and len(ds) == 1
    gt = ds[0].gt
    assert gt.sum() == 4 + 4 + 1 and gt[9, 9] == 1 and gt.min() == 0
    # COCO-MVal uses the same reader under its own name
    mval = tmp_path / "benchmarks" / "COCO_MVal"
    write_image(mval / "img" / "a.jpg", photo())
    write_palette(mval / "gt" / "a.png", ids)
    assert open_dataset("coco-mval", root=tmp_path)[0].gt.sum() == 9


# ------------------------------------------------------------------------------------------------------ DRIVE

def make_drive(root: Path) -> Path:
    dr = root / "DRIVE"
    for split, key in (("test", "01"), ("test", "02"), ("training", "21")):
        d = dr / split
        write_image(d / "images" / f"{key}_{split}.png", photo(seed=int(key)))
        vessel = blob(5, 6, 0, W)  # a 1-px line
        (d / "1st_manual").mkdir(parents=True, exist_ok=True)
        Image.fromarray(vessel, mode="L").save(d / "1st_manual" / f"{key}_manual1.gif")
        fov = np.zeros((H, W), np.uint8)
        cv2.circle(fov, (W // 2, H // 2), 5, 255, -1)
        (d / "mask").mkdir(parents=True, exist_ok=True)
        Image.fromarray(fov, mode="L").save(d / "mask" / f"{key}_{split}_mask.gif")
        if split == "test":  # second observer: palette GIF with indices {0, 1}
            (d / "2nd_manual").mkdir(parents=True, exist_ok=True)
            img = Image.fromarray((vessel > 0).astype(np.uint8), mode="P")
            img.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
            img.save(d / "2nd_manual" / f"{key}_manual2.gif")
    return dr


def test_drive_reader_fov_region_splits_and_annotators(tmp_path):
    dr = make_drive(tmp_path)
    ds = open_dataset("DRIVE", root=tmp_path)
    assert len(ds) == 2 and [s.name for s in ds] == ["01_test", "02_test"]
    s = ds[0]
    assert s.region is not None and s.region.dtype == bool and 0 < s.region.sum() < H * W
    assert s.gt[5].tolist() == [1] * W and s.gt.sum() == W
    assert len(open_dataset("DRIVE", root=tmp_path, split="training")) == 1
    assert len(open_dataset("DRIVE", root=tmp_path, split="all")) == 3
    second = open_dataset("DRIVE", root=tmp_path, annotator=2)[0]
    assert np.array_equal(second.gt, s.gt)  # palette {0,1} GIF reads as indices, not colours
    assert open_dataset("DRIVE", root=tmp_path, fov=False)[0].region is None
    assert detect_kind(dr) == "drive"
    with pytest.raises(FinecutError, match="split"):
        open_dataset("DRIVE", root=tmp_path, split="nope")


def test_read_label_gif_palette_indices(tmp_path):
    p = tmp_path / "m.gif"
    img = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    img.save(p)
    assert read_label(p).tolist() == [[0, 1], [1, 0]]


# ------------------------------------------------------------------------------------------------ CrackForest

def test_crackforest_reader_mat_segmentation(tmp_path):
    cf = tmp_path / "benchmarks" / "CrackForest"
    seg = np.ones((H, W), np.uint8)
    seg[3, :] = 2
    seg[7, 2:5] = 3
    (cf / "groundTruth").mkdir(parents=True)
    scipy.io.savemat(cf / "groundTruth" / "001.mat",
                     {"groundTruth": {"Segmentation": seg, "Boundaries": (seg > 1).astype(np.uint8)}})
    write_image(cf / "image" / "001.jpg", photo())
    write_image(cf / "image" / "002.jpg", photo())  # no ground truth: not a sample
    ds = open_dataset("CrackForest", root=tmp_path)
    assert len(ds) == 1
    gt = ds[0].gt
    assert gt.sum() == W + 3 and gt[3].all() and gt[7, 2:5].all()
    only2 = open_dataset("CrackForest", root=tmp_path, labels=(2,))[0].gt
    assert only2.sum() == W and not only2[7].any()
    assert detect_kind(cf) == "crackforest"


# ---------------------------------------------------------------------------------------------------- BSDS500

def make_bsds(root: Path) -> Path:
    b = root / "BSDS500"
    p1 = np.ones((H, W), np.uint16)
    p1[:, 8:] = 2
    p1[0, 0] = 3  # a speck
    p2 = p1.copy()
    p2[0, 0] = 1
    p2[6:, :8] = 4  # splits region 1
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0] = {"Segmentation": p1, "Boundaries": np.zeros((H, W), np.uint8)}
    cells[0, 1] = {"Segmentation": p2, "Boundaries": np.zeros((H, W), np.uint8)}
    (b / "data" / "groundTruth" / "train").mkdir(parents=True)
    scipy.io.savemat(b / "data" / "groundTruth" / "train" / "12.mat", {"groundTruth": cells})
    write_image(b / "data" / "images" / "train" / "12.jpg", photo())
    return b


def test_bsds_reader_regions_partitions_and_filters(tmp_path):
    b = make_bsds(tmp_path)
    all_regions = open_dataset("BSDS500", root=tmp_path, min_area_frac=0.0, max_area_frac=1.0)
    # partition 0: regions 1, 2, 3 (speck); partition 1: regions 1, 2, 4
    assert [r.name for r in all_regions.refs] == ["12/p0/r1", "12/p0/r2", "12/p0/r3", "12/p1/r1", "12/p1/r2",
                                                  "12/p1/r4"]
    default = open_dataset("BSDS500", root=tmp_path)  # min 1% drops the 1-px speck
    assert len(default) == 5
    s = default[1]
    assert s.gt.sum() == H * 8 and s.gt[:, 8:].all() and s.meta["partition"] == 0 and s.meta["area"] == H * 8
    assert len(read_bsds(b, partitions=1, min_area_frac=0.0)) == 3
    deduped = read_bsds(b, dedupe_iou=0.95)  # p1/r2 equals p0/r2
    assert [r.name for r in deduped.refs] == ["12/p0/r1", "12/p0/r2", "12/p1/r1", "12/p1/r4"]
    assert len(default.groups()) == 1
    assert detect_kind(b) == "bsds"


# -------------------------------------------------------------------------------------------------------- SBD

def test_sbd_reader_one_sample_per_instance(tmp_path):
    sbd = tmp_path / "SBD"
    ids = np.zeros((H, W), np.uint8)
    ids[1:4, 1:4], ids[6:10, 6:12] = 1, 2
    (sbd / "inst").mkdir(parents=True)
    for stem in ("2008_000001", "2008_000002"):
        scipy.io.savemat(sbd / "inst" / f"{stem}.mat", {"GTinst": {
            "Segmentation": ids, "Boundaries": np.zeros((H, W), np.uint8), "Categories": np.array([[15], [7]])}})
        write_image(sbd / "img" / f"{stem}.jpg", photo())
    (sbd / "val.txt").write_text("2008_000002\n")
    ds = open_dataset(sbd)
    assert detect_kind(sbd) == "sbd"
    assert [s.name for s in ds] == ["2008_000002#1", "2008_000002#2"]
    assert ds[1].gt.sum() == 24 and ds[1].gt[6:10, 6:12].all()
    assert len(open_dataset(sbd, split="all")) == 4
    with pytest.raises(FinecutError, match="train.txt"):
        open_dataset(sbd, split="train")


# -------------------------------------------------------------------------------------------------- PASCAL VOC

def make_voc(root: Path) -> tuple[Path, np.ndarray]:
    voc = root / "VOC2012"
    ids = np.zeros((H, W), np.uint8)
    ids[1:5, 1:5], ids[6:11, 8:14] = 1, 2
    ids[0, :] = 255  # void boundary
    write_palette(voc / "SegmentationObject" / "2007_000032.png", ids)
    write_image(voc / "JPEGImages" / "2007_000032.jpg", photo())
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    return voc, ids


def test_voc_reader_palette_instances_and_void_ignore(tmp_path):
    voc, ids = make_voc(tmp_path)
    ds = open_dataset(voc)
    assert detect_kind(voc) == "voc" and len(ds) == 2
    gt = ds[1].gt
    assert (gt[0] == -1).all() and (gt == -1).sum() == W and gt[6:11, 8:14].all()
    assert (gt == 1).sum() == 30 and (ds[0].gt == 1).sum() == 16
    assert len(read_voc(voc, split="all", min_area=20)) == 1


def test_voc_rgb_mask_maps_colours_to_ids(tmp_path):
    ids = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    rgb = voc_colormap()[ids]
    p = tmp_path / "m.png"
    Image.fromarray(rgb, mode="RGB").save(p)
    assert read_index_label(p).tolist() == ids.tolist()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb, mode="RGB").save(p)
    with pytest.raises(FinecutError, match="m.png.*not a PASCAL VOC palette colour"):
        read_index_label(p)


# ----------------------------------------------------------------------------------------------- COCO panoptic

def make_panoptic(root: Path) -> Path:
    c = root / "COCO128"
    ann_dir = c / "panoptic_segmentation" / "annotations"
    seg = np.zeros((H, W), np.int64)
    seg[0:4, 0:4] = 1000  # thing
    seg[5:9, 0:8] = 70000  # thing, crowd
    seg[:, 10:] = 5 + 256 * 3 + 65536 * 2  # stuff
    rgb = np.stack([seg % 256, seg // 256 % 256, seg // 65536], axis=2).astype(np.uint8)
    write_image(ann_dir / "panoptic_val2017" / "000000000139.png", rgb)
    write_image(c / "images" / "val2017" / "000000000139.jpg", photo())
    data = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": H, "width": W}],
        "annotations": [{"image_id": 139, "file_name": "000000000139.png", "segments_info": [
            {"id": 1000, "category_id": 1, "iscrowd": 0, "area": 16, "bbox": [0, 0, 4, 4]},
            {"id": 70000, "category_id": 1, "iscrowd": 1, "area": 32, "bbox": [0, 5, 8, 4]},
            {"id": int(5 + 256 * 3 + 65536 * 2), "category_id": 184, "iscrowd": 0, "area": 72, "bbox": [10, 0, 6, 12]},
        ]}],
        "categories": [{"id": 1, "name": "person", "isthing": 1}, {"id": 184, "name": "tree", "isthing": 0}],
    }
    (ann_dir / "panoptic_val2017.json").write_text(json.dumps(data))
    return c


def test_coco_panoptic_reader_ids_crowd_stuff_void(tmp_path):
    c = make_panoptic(tmp_path)
    ds = open_dataset("COCO128", root=tmp_path)
    assert detect_kind(c) == "coco_panoptic"
    assert [r.meta["object_id"] for r in ds.refs] == [1000, 5 + 256 * 3 + 65536 * 2]  # crowd skipped
    assert ds[0].gt.sum() == 16 and ds[0].gt[0:4, 0:4].all()
    assert ds[1].gt.sum() == H * 6 and ds[1].meta["isthing"] is False
    assert len(read_coco_panoptic(c, things_only=True)) == 1
    assert len(read_coco_panoptic(c, crowd="object")) == 3
    assert len(read_coco_panoptic(c, min_area=20)) == 1
    voided = read_coco_panoptic(c, void="ignore")[0].gt
    assert voided[9, 0] == -1 and voided[0, 0] == 1 and voided[0, 12] == 0
    assert len(ds.groups()) == 1 and len(next(iter(ds.groups().values()))) == 2


# ---------------------------------------------------------------------------------------------- COCO instances

def make_instances(root: Path) -> Path:
    c = root / "coco"
    write_image(c / "val2017" / "a.jpg", photo())
    write_image(c / "val2017" / "b.jpg", photo(seed=3))
    rle_mask = np.asfortranarray(blob(8, 12, 0, 6, 1))
    rle = mask_utils.encode(rle_mask)
    rle["counts"] = rle["counts"].decode()
    crowd_u = {"size": [H, W], "counts": []}
    # uncompressed RLE of the crowd region, column-major runs
    flat = np.asarray(blob(0, 12, 10, 16, 1)).ravel(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    crowd_u["counts"] = runs
    assert sum(runs) == H * W and sum(runs[1::2]) == 72
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W},
                   {"id": 2, "file_name": "b.jpg", "height": H, "width": W}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 64.0, "bbox": [8, 0, 8, 8],
             "segmentation": [[8, 0, 16, 0, 16, 8, 8, 8]]},
            {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 24.0, "bbox": [0, 8, 6, 4],
             "segmentation": rle},
            {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 72.0, "bbox": [10, 0, 6, 12],
             "segmentation": crowd_u},
            {"id": 21, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [0, 0, 2, 2],
             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
    }
    (c / "annotations").mkdir(parents=True)
    (c / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return c


def test_coco_instances_reader_polygon_rle_crowd(tmp_path):
    c = make_instances(tmp_path)
    assert detect_kind(c) == "coco_instances"
    ds = open_dataset(c)
    assert [r.meta["object_id"] for r in ds.refs] == [11, 12, 21]
    poly = ds[0].gt
    assert (poly == 1).sum() > 0 and poly[2, 12] == 1 and poly[10, 2] == 0
    assert (poly == -1).sum() > 0 and poly[11, 12] == -1  # crowd region, outside the object, is ignore
    rle = ds[1].gt
    assert (rle == 1).sum() == 24 and rle[9, 3] == 1
    assert len(read_coco_instances(c, crowd="object")) == 4
    skipped = read_coco_instances(c, crowd="skip")
    assert len(skipped) == 3 and (skipped[0].gt == -1).sum() == 0
    assert len(read_coco_instances(c, min_area=10)) == 2
    assert len(read_coco_instances(c, category_ids=(2,))) == 1
    # a JSON file path opens too
    assert len(open_dataset(c / "annotations" / "instances_val2017.json", images_dir=c / "val2017")) == 3


# ---------------------------------------------------------------------------------------- generic image folders

def test_folder_reader_user_images_and_masks(tmp_path):
    f = tmp_path / "mine"
    write_image(f / "images" / "cat.jpg", photo())
    write_image(f / "images" / "dog.png", photo(seed=1))
    write_gray(f / "masks" / "cat.png", blob(2, 6, 2, 6))
    write_gray(f / "masks" / "dog.png", blob(0, 3, 0, 3, value=1))  # 0/1 mask
    ds = open_dataset(f)
    assert detect_kind(f) == "folder" and ds.name == "mine" and len(ds) == 2
    assert ds[0].gt.sum() == 16 and ds[1].gt.sum() == 9
    assert set(np.unique(ds[0].gt)) <= {0, 1}


def test_folder_reader_suffix_inference_same_folder_and_list_file(tmp_path):
    f = tmp_path / "suffixed"
    for stem in ("a", "b"):
        write_image(f / "imgs" / f"{stem}.jpg", photo())
        write_gray(f / "labels" / f"{stem}_mask.png", blob(1, 4, 1, 4))
    ds = read_folder(f)
    assert [s.name for s in ds] == ["a", "b"] and ds[0].gt.sum() == 9
    flat = tmp_path / "flat"
    write_image(flat / "x.jpg", photo())
    write_gray(flat / "x_gt.png", blob(0, 2, 0, 2))
    ds2 = open_dataset(flat)
    assert len(ds2) == 1 and ds2[0].gt.sum() == 4
    (f / "test.txt").write_text("b.jpg\n")
    assert [s.name for s in read_folder(f, list_file="test.txt")] == ["b"]
    explicit = read_folder(f, images_dir="imgs", masks_dir="labels", mask_suffix="_mask")
    assert len(explicit) == 2


def test_folder_reader_im_gt_hrsod_and_parent_of_subsets(tmp_path):
    dis = tmp_path / "DIS5K"
    for sub in ("DIS-TE1", "DIS-TE2"):
        write_image(dis / sub / "im" / f"{sub}_1.jpg", photo())
        write_gray(dis / sub / "gt" / f"{sub}_1.png", blob(0, 5, 0, 5))
    combined = open_dataset(dis)
    assert len(combined) == 2 and [r.name for r in combined.refs] == ["DIS-TE1/DIS-TE1_1", "DIS-TE2/DIS-TE2_1"]
    assert combined[1].gt.sum() == 25
    assert len(open_dataset("DIS5K", root=tmp_path)) == 2
    hr = tmp_path / "HRSOD"
    write_image(hr / "HRSOD_test" / "1.jpg", photo())
    write_gray(hr / "HRSOD_test_mask" / "1.png", blob(0, 3, 0, 3))
    assert open_dataset(hr)[0].gt.sum() == 9


def test_folder_reader_weizmann_resize_and_msra(tmp_path):
    wz = tmp_path / "train" / "WeizmannHorse"
    write_image(wz / "rgb" / "horse001.jpg", photo(24, 32))
    write_gray(wz / "figure_ground" / "horse001.jpg", blob(0, 6, 0, 8))  # half size, JPEG
    s = open_dataset("WeizmannHorse", root=tmp_path)[0]
    assert s.gt.shape == (24, 32)
    assert s.gt[:10, :14].all() and not s.gt[14:, 18:].any()
    ms = tmp_path / "train" / "MSRA10K-168"
    write_image(ms / "images" / "101.jpg", photo())
    write_gray(ms / "gt" / "101.png", blob(0, 4, 0, 4))
    assert open_dataset("msra10k", root=tmp_path)[0].gt.sum() == 16


def test_folder_reader_instances_mode(tmp_path):
    f = tmp_path / "inst"
    write_image(f / "images" / "a.jpg", photo())
    ids = np.zeros((H, W), np.uint8)
    ids[0:2, 0:2], ids[5:8, 5:8], ids[11, 15] = 1, 2, 3
    write_gray(f / "masks" / "a.png", ids)
    ds = read_folder(f, objects="instances", min_area=2)
    assert [s.name for s in ds] == ["a#1", "a#2"] and ds[1].gt.sum() == 9


# -------------------------------------------------------------------------------------------------- registry

def test_list_datasets_and_kinds():
    names = list_datasets()
    for name in ("GrabCut", "Berkeley", "DAVIS", "DRIVE", "CrackForest", "COCO128", "BSDS500", "WeizmannHorse",
                 "MSRA10K", "SBD", "PascalVOC", "COCO-MVal"):
        assert name in names and names[name]
    assert {"grabcut", "folder", "coco_panoptic", "coco_instances", "bsds", "voc", "sbd"} <= set(list_kinds())


def test_default_data_root_env_and_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FINECUT_DATA", str(tmp_path))
    assert registry.default_data_root() == tmp_path
    gc = make_grabcut(tmp_path)
    assert len(open_dataset("grabcut")) == 3  # name lookup is case-insensitive
    assert len(open_dataset("GrabCut", root=gc)) == 3  # root may also be the set's own folder
    monkeypatch.setenv("FINECUT_DATA", str(tmp_path / "missing"))
    with pytest.raises(FinecutError, match="FINECUT_DATA"):
        registry.default_data_root()
    monkeypatch.delenv("FINECUT_DATA")
    monkeypatch.setattr(registry, "_root_candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(FinecutError, match="no data root"):
        registry.default_data_root()


def test_kind_override_and_unknown_kind(tmp_path):
    gc = make_grabcut(tmp_path)
    ds = open_dataset(gc, kind="folder", images_dir="data_GT", masks_dir="boundary_GT")
    assert ds[0].gt.min() == 0  # the generic reader has no ignore band
    with pytest.raises(FinecutError, match="unknown dataset kind 'nope'"):
        open_dataset(gc, kind="nope")
    with pytest.raises(FinecutError, match="grabcut.*unexpected keyword argument 'bogus'"):
        open_dataset(gc, bogus=1)


# ------------------------------------------------------------------------------------------------------ errors

def test_error_missing_folder_and_unknown_name(tmp_path):
    with pytest.raises(FinecutError, match="dataset folder not found"):
        open_dataset(tmp_path / "absent")
    with pytest.raises(FinecutError, match="known names"):
        open_dataset("NoSuchSet")
    with pytest.raises(FinecutError, match="dataset GrabCut not found under"):
        open_dataset("GrabCut", root=tmp_path)


def test_error_empty_folder_and_no_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FinecutError, match="empty.*dataset folder is empty"):
        open_dataset(empty)
    f = tmp_path / "noimg"
    (f / "images").mkdir(parents=True)
    write_gray(f / "masks" / "a.png", blob(0, 2, 0, 2))
    with pytest.raises(FinecutError, match="images.*no images found"):
        read_folder(f, images_dir="images", masks_dir="masks")
    (f / "images" / "notes.txt").write_text("x")
    with pytest.raises(FinecutError, match="cannot tell the dataset layout"):
        open_dataset(f)


def test_error_image_without_mask_names_it(tmp_path):
    gc = make_grabcut(tmp_path)
    write_image(gc / "data_GT" / "extra.jpg", photo())
    with pytest.raises(FinecutError, match=r"extra\.jpg: no mask named extra\.\* in .*boundary_GT"):
        open_dataset(gc)
    assert len(open_dataset(gc, missing="skip")) == 3


def test_error_mask_size_mismatch_names_both_files(tmp_path):
    f = tmp_path / "bad"
    write_image(f / "images" / "a.jpg", photo())
    write_gray(f / "masks" / "a.png", np.zeros((H + 1, W), np.uint8))
    ds = open_dataset(f)  # listing works; loading the sample fails
    with pytest.raises(FinecutError, match=r"a\.png: mask size 16x13 does not match image .*a\.jpg size 16x12"):
        ds[0]


def test_error_unreadable_files_named(tmp_path):
    f = tmp_path / "corrupt"
    (f / "images").mkdir(parents=True)
    (f / "images" / "a.jpg").write_bytes(b"not a jpeg")
    write_gray(f / "masks" / "a.png", blob(0, 2, 0, 2))
    with pytest.raises(FinecutError, match=r"a\.jpg: cannot decode image"):
        open_dataset(f)[0]
    cf = tmp_path / "CrackForest"
    write_image(cf / "image" / "001.jpg", photo())
    (cf / "groundTruth").mkdir(parents=True)
    (cf / "groundTruth" / "001.mat").write_bytes(b"garbage" * 40)
    with pytest.raises(FinecutError, match=r"001\.mat: cannot read MATLAB file"):
        open_dataset(cf)[0]
    scipy.io.savemat(cf / "groundTruth" / "001.mat", {"other": np.zeros(3)})
    with pytest.raises(FinecutError, match=r"001\.mat: no variable 'groundTruth'"):
        open_dataset(cf)[0]
    c = make_instances(tmp_path)
    (c / "annotations" / "instances_val2017.json").write_text("{broken")
    with pytest.raises(FinecutError, match="instances_val2017.json: invalid JSON"):
        open_dataset(c)
    gif = tmp_path / "x.gif"
    gif.write_bytes(b"GIF89a junk")
    with pytest.raises(FinecutError, match=r"x\.gif: cannot decode image"):
        read_label(gif)


def test_error_mat_without_image_and_panoptic_png_missing(tmp_path):
    cf = tmp_path / "CrackForest"
    (cf / "image").mkdir(parents=True)
    (cf / "groundTruth").mkdir(parents=True)
    scipy.io.savemat(cf / "groundTruth" / "005.mat", {"groundTruth": {"Segmentation": np.ones((H, W), np.uint8)}})
    with pytest.raises(FinecutError, match=r"005\.mat: no image named 005\.\*"):
        open_dataset(cf)
    c = make_panoptic(tmp_path)
    (c / "panoptic_segmentation" / "annotations" / "panoptic_val2017" / "000000000139.png").unlink()
    with pytest.raises(FinecutError, match=r"000000000139\.png: file not found"):
        open_dataset(c)


# ------------------------------------------------------------------------------------------ caching and views

def test_shared_cache_decodes_each_file_once(tmp_path):
    c = make_panoptic(tmp_path)
    ds = read_coco_panoptic(c, crowd="object")
    assert len(ds) == 3
    samples = list(ds)
    assert ds.cache is not None and ds.cache.misses == 2  # one image + one PNG for three objects
    samples[0].image[:] = 0  # caller-owned copies: the cache is not corrupted
    assert ds[1].image.any()
    assert np.array_equal(ds[1].image, samples[1].image)


def test_cached_view_and_plain_sample_lru(tmp_path):
    gc = make_grabcut(tmp_path)
    ds = open_dataset(gc)
    view = ds.cached(max_bytes=1 << 20)
    assert view.cache is ds.cache and ds.cache.max_bytes >= 1 << 20
    first = [s.gt.copy() for s in view]
    misses = ds.cache.misses
    again = [s.gt for s in view]
    assert ds.cache.misses == misses and all(np.array_equal(a, b) for a, b in zip(first, again))
    plain = Dataset("plain", ds.refs).cached(max_samples=2)
    a, b = plain[0], plain[0]
    assert a is not b and np.array_equal(a.image, b.image)
    a.image[:] = 0
    assert plain[0].image.any()
    assert plain[-1].name == ds[-1].name


def test_views_subset_filter_concat_slice_and_pickle(tmp_path):
    gc = make_grabcut(tmp_path)
    voc, _ = make_voc(tmp_path)
    a, b = open_dataset(gc), open_dataset(voc)
    assert [s.name for s in a.subset([2, 0])] == ["banana", "106024"]
    assert len(a.filter(lambda r: r.name.startswith("P"))) == 1
    assert len(a[1:]) == 2 and isinstance(a[1:], Dataset)
    both = Dataset.concat([a, b])
    assert len(both) == 5 and both[4].name == "2007_000032#2"
    assert both.cached(max_bytes=8 << 20) is not None and a.cache.max_bytes >= 4 << 20
    ref = pickle.loads(pickle.dumps(b.refs[1]))  # refs travel to DataLoader worker processes
    assert np.array_equal(ref.load().gt, b[1].gt)


def test_file_cache_is_bounded():
    cache = FileCache(max_bytes=1000)
    for i in range(5):
        cache.get(i, lambda: np.zeros(400, np.uint8))
    assert len(cache) == 2 and cache.nbytes <= 1000
    assert cache.get(4, lambda: None) is not None and cache.hits == 1
    big = cache.get("big", lambda: np.zeros(5000, np.uint8))
    assert big.shape == (5000,) and "big" not in cache._entries
