import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from finecut import FinecutError
from finecut.export import (
    ExportImage,
    ExportObject,
    bridge_holes,
    coco_dataset,
    export_images,
    mask_to_parts,
    mask_to_polygons,
    mask_to_rle,
    polygons_to_mask,
    rle_to_mask,
)
from finecut.io import read_label_image, read_mask


def ring_with_hole_and_island() -> np.ndarray:
    """A disk with a round hole holding an island, a square hole, and a separate rectangle (3 parts, 2 holes)."""
    m = np.zeros((120, 160), np.uint8)
    cv2.circle(m, (60, 60), 45, 1, -1)
    cv2.circle(m, (60, 60), 15, 0, -1)
    cv2.rectangle(m, (30, 40), (40, 50), 0, -1)
    cv2.circle(m, (60, 60), 6, 1, -1)
    cv2.rectangle(m, (120, 20), (150, 100), 1, -1)
    return m.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_rle_round_trip_is_exact():
    m = ring_with_hole_and_island()
    rle = mask_to_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [120, 160]
    json.dumps(rle)
    assert np.array_equal(rle_to_mask(rle), m)
    # uncompressed counts (column-major, as COCO writes them) are accepted too
    fortran = m.T.reshape(-1)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], fortran.astype(int), [2]])) != 0)
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    assert np.array_equal(rle_to_mask({"size": [120, 160], "counts": counts[: len(counts)]}), m)


def test_invalid_rle_raises_finecut_error():
    with pytest.raises(FinecutError, match="invalid mask RLE"):
        rle_to_mask({"size": [2, 2]})


def test_parts_keep_holes_and_multiple_parts():
    parts = mask_to_parts(ring_with_hole_and_island())
    assert len(parts) == 3  # disk, island, rectangle
    holes = sorted(len(p.holes) for p in parts)
    assert holes == [0, 0, 2]


def test_polygons_rasterise_back_with_holes_empty():
    m = ring_with_hole_and_island()
    polys = mask_to_polygons(m)
    assert len(polys) == 3 and all(len(p) % 2 == 0 and len(p) >= 6 for p in polys)
    back = polygons_to_mask(polys, 120, 160)
    assert iou(back, m) > 0.97
    assert not back[60, 50]  # inside the round hole
    assert not back[45, 35]  # inside the square hole
    assert back[60, 60]  # the island in the hole
    assert back[60, 135]  # the separate rectangle


def test_thin_and_single_pixel_objects_survive_as_polygons():
    m = np.zeros((60, 80), bool)
    cv2.line(m.view(np.uint8), (5, 5), (70, 50), 1, 1)
    m[55, 3] = True
    back = polygons_to_mask(mask_to_polygons(m), 60, 80)
    assert back[55, 3]
    assert iou(back, m) > 0.8


def test_bridge_holes_produces_one_ring():
    outer = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    hole = np.array([[4, 4], [4, 6], [6, 6], [6, 4]], float)
    ring = bridge_holes(outer, [hole])
    assert len(ring) == 4 + 5 + 1
    back = polygons_to_mask([ring.reshape(-1).tolist()], 12, 12)
    assert back[2, 2] and not back[5, 5]


def test_coco_dataset_rle_and_polygons_are_loadable():
    m1 = ring_with_hole_and_island()
    m2 = np.zeros_like(m1)
    m2[5:15, 5:30] = True
    img = ExportImage("a.jpg", 120, 160, (ExportObject(1, "cat", m1), ExportObject(2, "dog", m2)))
    empty = ExportImage("b.jpg", 120, 160, ())
    rle = coco_dataset([img, empty], "rle")
    assert [c["name"] for c in rle["categories"]] == ["cat", "dog"]
    assert [a["image_id"] for a in rle["annotations"]] == [1, 1]
    assert rle["annotations"][1]["bbox"] == [5.0, 5.0, 25.0, 10.0]
    assert rle["annotations"][0]["area"] == int(m1.sum())
    decoded = mask_utils.decode({"size": [120, 160], "counts": rle["annotations"][0]["segmentation"]["counts"]})
    assert np.array_equal(decoded.astype(bool), m1)

    poly = coco_dataset([img], "polygons")
    ann = poly["annotations"][0]
    back = polygons_to_mask(ann["segmentation"], 120, 160)
    assert iou(back, m1) > 0.97 and not back[60, 50]
    assert len(ann["polygons_with_holes"]) == 3
    assert sum(len(p["holes"]) for p in ann["polygons_with_holes"]) == 2
    with pytest.raises(FinecutError, match="segmentation"):
        coco_dataset([img], "bitmap")


def test_export_images_writes_pngs_and_coco(tmp_path):
    m1 = ring_with_hole_and_island()
    m2 = np.zeros_like(m1)
    m2[50:70, 100:140] = True  # overlaps the rectangle: the later object wins in the instance map
    img = ExportImage("photo.jpg", 120, 160, (ExportObject(1, "a cat/x", m1), ExportObject(2, "dog", m2)))
    files = export_images([img], tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert names == {
        "photo.jpg/photo.jpg_obj001_a_cat_x.png",
        "photo.jpg/photo.jpg_obj002_dog.png",
        "photo.jpg/photo.jpg_instances.png",
        "coco_rle.json",
        "coco_polygons.json",
        "finecut-export.json",
    }
    assert np.array_equal(read_mask(tmp_path / "photo.jpg/photo.jpg_obj001_a_cat_x.png"), m1)
    inst = read_label_image(tmp_path / "photo.jpg/photo.jpg_instances.png")
    assert inst.dtype == np.uint8 and inst[60, 130] == 2 and inst[30, 130] == 1 and inst[0, 0] == 0
    coco = json.loads((tmp_path / "coco_polygons.json").read_text())
    assert len(coco["annotations"]) == 2
    with pytest.raises(FinecutError, match="unknown export format"):
        export_images([img], tmp_path, formats=["tiff"])


def test_instance_map_uses_16_bits_for_large_ids(tmp_path):
    m = np.zeros((10, 10), bool)
    m[2:4, 2:4] = True
    img = ExportImage("x.png", 10, 10, (ExportObject(300, "a", m),))
    export_images([img], tmp_path, formats=["png"])
    inst = read_label_image(tmp_path / "x.png/x.png_instances.png")
    assert inst.dtype == np.uint16 and inst[3, 3] == 300


def test_mask_shape_mismatch_is_reported():
    img = ExportImage("x.png", 10, 10, (ExportObject(1, "a", np.ones((5, 5), bool)),))
    with pytest.raises(FinecutError, match="x.png: object 1 mask has shape"):
        coco_dataset([img])


# ---------------------------------------------------------------- complete, unambiguous, reproducible (issue 12.4)
def _square(y0: int, x0: int, size: int = 10, shape: tuple[int, int] = (40, 60)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_stem_with_different_extensions_exports_apart(tmp_path):
    jpg = ExportImage("cat.jpg", 40, 60, (ExportObject(1, "a", _square(2, 2)), ExportObject(2, "b", _square(20, 30))))
    png = ExportImage("cat.png", 40, 60, (ExportObject(1, "a", _square(25, 5)),))
    export_images([jpg, png], tmp_path / "out")
    out = tmp_path / "out"
    assert read_label_image(out / "cat.jpg" / "cat.jpg_instances.png")[3, 3] == 1
    assert read_label_image(out / "cat.png" / "cat.png_instances.png")[26, 6] == 1
    assert read_label_image(out / "cat.png" / "cat.png_instances.png")[3, 3] == 0
    assert sorted(p.name for p in (out / "cat.png").iterdir()) == ["cat.png_instances.png", "cat.png_obj001_a.png"]
    # names that only differ after making them file-name-safe still get their own folders
    a = ExportImage("a b.png", 40, 60, (ExportObject(1, "a", _square(2, 2)),))
    b = ExportImage("a_b.png", 40, 60, (ExportObject(1, "a", _square(20, 20)),))
    files = export_images([a, b], tmp_path / "out2")
    assert len({f.parent for f in files if f.suffix == ".png"}) == 2


def test_reexport_replaces_the_folder_and_leaves_no_stale_files(tmp_path):
    out = tmp_path / "export"
    img = ExportImage("x.png", 40, 60, (ExportObject(1, "cat", _square(2, 2)), ExportObject(2, "dog", _square(20, 30))))
    export_images([img], out)
    assert len(list(out.rglob("*_obj002_dog.png"))) == 1
    img2 = ExportImage("x.png", 40, 60, (ExportObject(1, "tiger", _square(2, 2)),))  # obj 2 deleted, 1 relabelled
    export_images([img2], out)
    pngs = sorted(p.name for p in out.rglob("*.png") if p.is_file())
    assert pngs == ["x.png_instances.png", "x.png_obj001_tiger.png"]
    assert not [p for p in tmp_path.iterdir() if p.name != "export"]  # no temporary or backup folders left


def test_export_is_reproducible(tmp_path):
    imgs = [ExportImage("b.png", 40, 60, (ExportObject(1, "dog", _square(5, 5)),)),
            ExportImage("a.png", 40, 60, (ExportObject(3, "cat", _square(10, 10)), ExportObject(4, "dog", _square(0, 40))))]
    export_images(imgs, tmp_path / "one")
    export_images(imgs, tmp_path / "two")
    export_images(imgs, tmp_path / "two")
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")


def test_category_ids_stay_stable_across_exports(tmp_path):
    out = tmp_path / "export"

    def export(labels):
        objs = tuple(ExportObject(i + 1, label, _square(2 * i, 2 * i, 3)) for i, label in enumerate(labels))
        export_images([ExportImage("x.png", 40, 60, objs)], out)
        coco = json.loads((out / "coco_rle.json").read_text())
        cats = {c["id"]: c["name"] for c in coco["categories"]}
        assert json.loads((out / "coco_polygons.json").read_text())["categories"] == coco["categories"]
        return {cats[a["category_id"]]: a["category_id"] for a in coco["annotations"]}

    first = export(["dog", "cat"])
    assert first == {"cat": 1, "dog": 2}
    second = export(["dog", "zebra"])  # cat gone: dog keeps 2, zebra does not take cat's id
    assert second["dog"] == 2 and second["zebra"] not in (1, 2)
    third = export(["ant", "cat", "zebra"])
    assert third["cat"] == 1 and third["zebra"] == second["zebra"] and third["ant"] not in (1, 2, second["zebra"])


def test_export_never_deletes_files_it_did_not_write(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    img = ExportImage("x.png", 40, 60, (ExportObject(1, "cat", _square(2, 2)),))
    with pytest.raises(FinecutError, match="notes.txt"):
        export_images([img], out)
    assert (out / "notes.txt").read_text() == "mine"
    export_images([img], tmp_path / "fresh")
    with pytest.raises(FinecutError, match="exists"):
        export_images([img], tmp_path / "fresh", overwrite=False)


# ---------------------------------------------------------------- label sets, status, drawing order (issue 19)
def test_label_set_ids_win_and_are_all_listed(tmp_path):
    out = tmp_path / "export"
    export_images([ExportImage("x.png", 40, 60, (ExportObject(1, "cat", _square(2, 2)),))], out)  # cat = 1
    objs = (ExportObject(1, "car", _square(2, 2)), ExportObject(2, "cat", _square(20, 20)))
    export_images([ExportImage("x.png", 40, 60, objs, status="done")], out,
                  label_ids={"person": 1, "car": 2, "tree": 3}, metadata={"status": {"x.png": "done"}})
    coco = json.loads((out / "coco_rle.json").read_text())
    cats = {c["name"]: c["id"] for c in coco["categories"]}
    assert cats["person"] == 1 and cats["car"] == 2 and cats["tree"] == 3  # unused classes listed too
    assert cats["cat"] not in (1, 2, 3)  # its old id belongs to a class of the set now
    assert coco["images"][0]["finecut_status"] == "done"
    manifest = json.loads((out / "finecut-export.json").read_text())
    assert manifest["status"] == {"x.png": "done"} and manifest["categories"]["car"] == 2


def test_instance_map_follows_drawing_order_and_coco_lists_by_id(tmp_path):
    below, above = _square(0, 0, 20), _square(10, 10, 20)
    img = ExportImage("x.png", 40, 60, (ExportObject(2, "b", above), ExportObject(1, "a", below)))  # 1 on top
    export_images([img], tmp_path / "e")
    inst = read_label_image(tmp_path / "e" / "x.png" / "x.png_instances.png")
    assert inst[15, 15] == 1 and inst[25, 25] == 2
    coco = json.loads((tmp_path / "e" / "coco_rle.json").read_text())
    assert [a["finecut_object_id"] for a in coco["annotations"]] == [1, 2]


def test_done_image_without_objects_is_exported_as_a_negative(tmp_path):
    export_images([ExportImage("empty.png", 40, 60, (), status="done")], tmp_path / "e")
    coco = json.loads((tmp_path / "e" / "coco_rle.json").read_text())
    assert coco["images"][0]["file_name"] == "empty.png" and coco["annotations"] == []
    assert not read_label_image(tmp_path / "e" / "empty.png" / "empty.png_instances.png").any()


# ------------------------------------------------------------------------------------------------- alpha mattes
def _matte(seed: int, shape=(40, 60)) -> np.ndarray:
    """Every 8-bit value, 0 and 255 included, in a random order."""
    values = np.resize(np.arange(256, dtype=np.uint8), shape[0] * shape[1])
    return np.random.default_rng(seed).permutation(values).reshape(shape)


def test_png_export_writes_an_objects_matte_next_to_its_mask(tmp_path):
    out = tmp_path / "export"
    cat, alpha = _matte(1), _matte(2)
    objs = (ExportObject(1, "cat", _square(2, 2), alpha=cat), ExportObject(2, "dog", _square(20, 30)),
            ExportObject(3, "alpha", _square(5, 40), alpha=alpha))  # a label "alpha" does not clash
    files = export_images([ExportImage("x.png", 40, 60, objs)], out)
    folder = out / "x.png"
    assert sorted(p.name for p in folder.iterdir()) == [
        "x.png_instances.png", "x.png_obj001_cat.png", "x.png_obj001_cat_alpha.png", "x.png_obj002_dog.png",
        "x.png_obj003_alpha.png", "x.png_obj003_alpha_alpha.png"]
    for name, want in (("x.png_obj001_cat_alpha.png", cat), ("x.png_obj003_alpha_alpha.png", alpha)):
        got = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
        assert got.dtype == np.uint8 and got.shape == (40, 60)  # 8-bit grayscale
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(read_mask(folder / "x.png_obj003_alpha.png"), _square(5, 40))  # still the mask
    manifest = json.loads((out / "finecut-export.json").read_text())
    assert "x.png/x.png_obj001_cat_alpha.png" in manifest["files"]
    assert out / "x.png" / "x.png_obj003_alpha_alpha.png" in files
    # the COCO files know nothing of mattes: the same as without them
    plain = tuple(ExportObject(o.id, o.label, o.mask) for o in objs)
    export_images([ExportImage("x.png", 40, 60, plain)], tmp_path / "plain")
    for name in ("coco_rle.json", "coco_polygons.json"):
        assert (out / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "plain" / "x.png").iterdir()) == [  # no mattes, the masks as above
        "x.png_instances.png", "x.png_obj001_cat.png", "x.png_obj002_dog.png", "x.png_obj003_alpha.png"]


def test_reexport_over_mattes_works_and_drops_stale_ones(tmp_path):
    out = tmp_path / "export"
    objs = (ExportObject(1, "cat", _square(2, 2), alpha=_matte(1)), ExportObject(2, "dog", _square(20, 30),
                                                                               alpha=_matte(2)))
    export_images([ExportImage("x.png", 40, 60, objs)], out)
    assert len(list(out.rglob("*_alpha.png"))) == 2
    export_images([ExportImage("x.png", 40, 60, objs[1:])], out)  # the folder is recognised; cat went away
    assert sorted(p.name for p in (out / "x.png").iterdir()) == [
        "x.png_instances.png", "x.png_obj002_dog.png", "x.png_obj002_dog_alpha.png"]
    np.testing.assert_array_equal(cv2.imread(str(out / "x.png" / "x.png_obj002_dog_alpha.png"),
                                             cv2.IMREAD_UNCHANGED), _matte(2))
    export_images([ExportImage("x.png", 40, 60, (ExportObject(2, "dog", _square(20, 30)),))], out)  # matte gone
    assert not list(out.rglob("*_alpha.png"))
    assert not [p for p in tmp_path.iterdir() if p.name != "export"]  # no temporary or backup folders left
    # a foreign file beside the mattes still stops the export, and nothing changes
    export_images([ExportImage("x.png", 40, 60, objs)], out)
    (out / "x.png" / "x.png_notes_alpha.txt").write_text("mine")
    before = _tree(out)
    with pytest.raises(FinecutError, match="x.png_notes_alpha.txt"):
        export_images([ExportImage("x.png", 40, 60, objs[1:])], out)
    assert _tree(out) == before


def test_export_object_checks_its_matte():
    mask = _square(2, 2)
    shape_error = r"object 7 \('cat'\): alpha matte has shape \(40, 59\), its mask \(40, 60\)"
    with pytest.raises(FinecutError, match=shape_error):
        ExportObject(7, "cat", mask, alpha=np.zeros((40, 59), np.uint8))
    with pytest.raises(FinecutError, match=r"object 7 \('cat'\): an alpha matte must be a 2-D uint8 array"):
        ExportObject(7, "cat", mask, alpha=np.zeros((40, 60), np.float32))
    with pytest.raises(FinecutError, match="2-D uint8"):
        ExportObject(7, "cat", mask, alpha=np.zeros((40, 60, 1), np.uint8))
    assert ExportObject(7, "cat", mask, alpha=np.zeros((40, 60), np.uint8)).alpha.shape == (40, 60)


def test_is_alpha_file_tells_mattes_from_masks_named_like_them():
    from finecut.export import alpha_file_name, is_alpha_file, mask_file_name

    obj = ExportObject(1, "dog", _square(2, 2))
    assert mask_file_name("k", obj) == "k_obj001_dog.png" and alpha_file_name("k", obj) == "k_obj001_dog_alpha.png"
    assert is_alpha_file("k_obj001_dog_alpha.png", ["k_obj001_dog.png", "k_obj001_dog_alpha.png"])
    # object 1 labelled "dog_alpha", without a matte: its mask is not a matte
    assert not is_alpha_file("k_obj001_dog_alpha.png", ["k_obj001_dog_alpha.png", "k_instances.png"])
    # ... and with one: only the matte is
    names = ["k_obj001_dog_alpha.png", "k_obj001_dog_alpha_alpha.png"]
    assert [is_alpha_file(n, names) for n in names] == [False, True]
    assert not is_alpha_file("dog_alpha.png", ["dog.png"])  # not an export's name: a user's mask
