"""Reading existing annotations: COCO files (RLE, polygons, boxes) and folders of PNG masks / instance maps."""

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from finecut.errors import FinecutError
from finecut.export import ExportImage, ExportObject, export_images, mask_to_polygons, mask_to_rle
from finecut.importers.coco import annotation_mask, coco_image_objects, is_coco, parse_coco, read_coco
from finecut.importers.masks import instance_masks, mask_folder_objects
from finecut.io import encode_png

H, W = 60, 80


def _disk(cx, cy, r):
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m.astype(bool)


def _ring():
    m = _disk(40, 30, 20)
    m[_disk(40, 30, 8)] = False  # a hole
    return m


def _coco(annotations, images=None, categories=None):
    return {
        "images": images or [{"id": 7, "file_name": "sub/photo.jpg", "height": H, "width": W}],
        "categories": categories or [{"id": 3, "name": "cat"}, {"id": 9, "name": "traffic light"}],
        "annotations": annotations,
    }


def test_rle_polygons_and_uncompressed_rle_decode_as_pycocotools_does():
    ring, disk = _ring(), _disk(15, 15, 6)
    raw = mask_utils.encode(np.asfortranarray(disk.astype(np.uint8)))
    uncompressed = {"size": [H, W], "counts": [int(v) for v in _runs_fortran(disk)]}
    data = _coco([
        {"id": 1, "image_id": 7, "category_id": 3, "segmentation": mask_to_rle(ring)},
        {"id": 2, "image_id": 7, "category_id": 9, "segmentation": mask_to_polygons(ring)},
        {"id": 3, "image_id": 7, "category_id": 3, "segmentation": uncompressed, "iscrowd": 1},
    ])
    coco = parse_coco(json.dumps(data))
    found = coco_image_objects(coco, "photo.jpg", H, W)  # matched by base name
    assert [o.label for o in found.objects] == ["cat", "traffic light", "cat"] and found.problems == []
    assert np.array_equal(found.objects[0].mask, ring)
    polygon_as_coco_reads_it = mask_utils.decode(mask_utils.merge(
        mask_utils.frPyObjects(data["annotations"][1]["segmentation"], H, W))).astype(bool)
    assert np.array_equal(found.objects[1].mask, polygon_as_coco_reads_it)
    assert not found.objects[1].mask[30, 40]  # the hole stays empty
    assert np.array_equal(found.objects[2].mask, mask_utils.decode(raw).astype(bool))


def _runs_fortran(mask):
    flat = mask.T.reshape(-1).astype(np.uint8)
    runs, current, count = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(count)
            current, count = v, 0
        count += 1
    runs.append(count)
    return runs


def test_problems_are_reported_and_the_rest_imported():
    data = _coco([
        {"id": 1, "image_id": 7, "category_id": 3, "segmentation": mask_to_rle(_ring())},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 10]},
        {"id": 3, "image_id": 7, "category_id": 9, "segmentation": mask_to_rle(_disk(5, 5, 3))},
        {"id": 4, "image_id": 7, "category_id": 3, "segmentation": {"size": [10, 10], "counts": "abc"}},
        {"id": 5, "image_id": 7, "category_id": 3, "segmentation": [[1, 1, 5, 1, 5]]},
        {"id": 6, "image_id": 7, "category_id": 3, "segmentation": mask_to_rle(np.zeros((H, W), bool))},
        {"id": 7, "image_id": 99, "category_id": 3, "segmentation": []},
        {"id": 8, "image_id": 7, "category_id": 42, "segmentation": []},
    ])
    coco = parse_coco(json.dumps(data), "det.json")
    assert any("names image id 99" in p for p in coco.problems) and any("category id 42" in p for p in coco.problems)
    found = coco_image_objects(coco, "photo.jpg", H, W, labels=["cat", "dog"])
    assert [o.label for o in found.objects] == ["cat"]
    text = "\n".join(found.problems)
    assert "annotation 2 has no segmentation (only a box)" in text and "finecut segment --batch" in text
    assert "category 'traffic light' is not in the label set" in text
    assert "annotation 4: RLE size [10, 10] differs" in text
    assert "annotation 5: a polygon needs an even number" in text
    assert "annotation 6 has an empty mask" in text
    wrong_size = coco_image_objects(coco, "photo.jpg", W, H)
    assert wrong_size.objects == [] and "says 80x60, the image is 60x80" in wrong_size.problems[0]
    assert coco_image_objects(coco, "other.jpg", H, W) is None


def test_label_set_matches_names_made_file_name_safe():
    coco = parse_coco(json.dumps(_coco([{"image_id": 7, "category_id": 9, "segmentation": mask_to_rle(_ring())}])))
    found = coco_image_objects(coco, "photo.jpg", H, W, labels=["Traffic Light"])
    assert [o.label for o in found.objects] == ["Traffic Light"]


@pytest.mark.parametrize(("text", "message"), [
    ("{oops", "not valid JSON at line 1"),
    ("[]", "not a COCO file"),
    ('{"images": [{"id": 1, "file_name": "a.png", "height": "60", "width": 80}]}', "images[0].height"),
    ('{"images": [{"id": 1, "file_name": "a.png", "height": 60, "width": 80}], "annotations": '
     '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, NaN, 1]}]}', "annotations[0].bbox"),
    ('{"images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 8}, '
     '{"id": 1, "file_name": "b.png", "height": 6, "width": 8}]}', "image id 1 appears twice"),
])
def test_invalid_coco_files_name_the_field(text, message):
    with pytest.raises(FinecutError) as info:
        parse_coco(text, "x.json")
    assert message in str(info.value) and str(info.value).startswith("x.json")


def test_ambiguous_base_names_and_reading_files(tmp_path):
    images = [{"id": 1, "file_name": "a/x.png", "height": H, "width": W},
              {"id": 2, "file_name": "b/x.png", "height": H, "width": W}]
    coco = parse_coco(json.dumps(_coco([], images=images)))
    with pytest.raises(FinecutError, match="matches several images"):
        coco.image("x.png")
    assert coco.image("a/x.png").id == 1
    with pytest.raises(FinecutError, match="COCO file not found"):
        read_coco(tmp_path / "none.json")
    (tmp_path / "c.json").write_text(json.dumps(_coco([])))
    assert read_coco(tmp_path / "c.json").images[7].file_name == "sub/photo.jpg"
    assert is_coco(_coco([])) and not is_coco({"a.png": {"clicks": [[1, 2]]}})


def test_box_annotation_gives_a_box():
    coco = parse_coco(json.dumps(_coco([{"id": 4, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 30]}])))
    ann = coco.annotations_of(coco.images[7])[0]
    assert ann.box().as_tuple() == (10, 5, 30, 35)
    with pytest.raises(FinecutError, match="only a box"):
        annotation_mask(ann, H, W)


# ------------------------------------------------------------------ PNG masks
def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(array))


def test_instance_map_binary_mask_and_colour_map(tmp_path):
    inst = np.zeros((H, W), np.uint8)
    inst[_disk(20, 20, 8)] = 2
    inst[_disk(60, 40, 8)] = 5
    _write(tmp_path / "a.png.png", inst)
    _write(tmp_path / "b.png", (_ring() * 255).astype(np.uint8))
    colour = np.zeros((H, W, 3), np.uint8)
    colour[_disk(20, 20, 8)] = (0, 0, 255)
    colour[_disk(60, 40, 8)] = (0, 255, 0)
    _write(tmp_path / "c.png", colour)
    a = mask_folder_objects(tmp_path, "a.png", H, W, "object")
    assert [o.label for o in a.objects] == ["object", "object"]
    assert np.array_equal(a.objects[0].mask, inst == 2) and np.array_equal(a.objects[1].mask, inst == 5)
    b = mask_folder_objects(tmp_path, "b.jpg", H, W, "thing")
    assert len(b.objects) == 1 and np.array_equal(b.objects[0].mask, _ring())
    c = mask_folder_objects(tmp_path, "c.jpg", H, W, "object")
    assert len(c.objects) == 2
    assert mask_folder_objects(tmp_path, "zzz.jpg", H, W, "object") is None
    small = mask_folder_objects(tmp_path, "b.jpg", H // 2, W, "object")
    assert small.objects == [] and "is 80x60, the image is 80x30" in small.problems[0]
    assert len(instance_masks(np.zeros((4, 4), np.uint16), "x")) == 0


def test_a_finecut_png_export_imports_back_with_labels_and_ids(tmp_path):
    objects = (ExportObject(1, "traffic light", _disk(20, 20, 8)), ExportObject(3, "cat", _ring()))
    export_images([ExportImage("photo.jpg", H, W, objects)], tmp_path / "export", formats=["png"])
    found = mask_folder_objects(tmp_path / "export", "photo.jpg", H, W, "object")
    assert [o.label for o in found.objects] == ["traffic_light", "cat"]  # file-name-safe labels
    assert np.array_equal(found.objects[1].mask, _ring())
    with_set = mask_folder_objects(tmp_path / "export", "photo.jpg", H, W, "cat", labels=["traffic light", "cat"])
    assert [o.label for o in with_set.objects] == ["traffic light", "cat"]
    refused = mask_folder_objects(tmp_path / "export", "photo.jpg", H, W, "dog", labels=["dog"])
    assert refused.objects == [] and len(refused.problems) == 2


def test_the_alpha_mattes_of_an_export_are_not_imported_as_objects(tmp_path):
    matte = np.full((H, W), 200, np.uint8)  # >= 128 everywhere: read as a mask it would be a whole-image object
    objects = (ExportObject(1, "cat", _disk(20, 20, 8), alpha=matte), ExportObject(2, "dog_alpha", _ring()),
               ExportObject(3, "alpha", _disk(60, 40, 6), alpha=matte))
    export_images([ExportImage("photo.jpg", H, W, objects)], tmp_path / "export", formats=["png"])
    assert len(list((tmp_path / "export" / "photo.jpg").glob("*_alpha.png"))) == 4  # 2 mattes, 2 masks
    found = mask_folder_objects(tmp_path / "export", "photo.jpg", H, W, "object")
    assert [o.label for o in found.objects] == ["cat", "dog_alpha", "alpha"] and found.problems == []
    for got, want in zip(found.objects, objects):
        assert np.array_equal(got.mask, want.mask)
    # a user's own folder: "x_alpha.png" is a mask like any other
    _write(tmp_path / "own" / "photo" / "cat.png", (_disk(20, 20, 8) * 255).astype(np.uint8))
    _write(tmp_path / "own" / "photo" / "cat_alpha.png", (_ring() * 255).astype(np.uint8))
    own = mask_folder_objects(tmp_path / "own", "photo.jpg", H, W, "object")
    assert [o.label for o in own.objects] == ["cat", "cat_alpha"]


def test_per_image_folder_of_plain_masks(tmp_path):
    _write(tmp_path / "photo" / "dog.png", (_disk(20, 20, 8) * 255).astype(np.uint8))
    _write(tmp_path / "photo" / "cat.png", _ring().astype(np.uint8))  # 0 / 1 masks work too
    found = mask_folder_objects(tmp_path, "photo.jpg", H, W, "object")
    assert [o.label for o in found.objects] == ["cat", "dog"]
    assert np.array_equal(found.objects[0].mask, _ring())
