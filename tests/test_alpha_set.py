"""The seeded synthetic alpha set (finecut.training.alpha_set, benchmarks/make_alpha_set.py): layout, determinism,
read-back through AlphaFolder, trimaps, held-out sources, and refusing to overwrite."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from finecut.errors import FinecutError
from finecut.evaluation.alpha import AlphaFolder
from finecut.training.alpha_set import (
    CutOut,
    Photo,
    alpha_trimap,
    folder_photos,
    held_out_photos,
    quantize_alpha,
    write_alpha_set,
)
from finecut.training.alpha_synth import render_alpha_composite
from finecut.training.objects import BankObject, ObjectBank

ROOT = Path(__file__).resolve().parents[1]
SIZE = 48
STEMS = ["0000-hair", "0001-fur", "0002-wires"]


def photo(seed: int, height: int = 70, width: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None] + rng.uniform(0, 40, 3)
    noise = rng.normal(0, 12, (height, width, 3))
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def backgrounds() -> list[np.ndarray]:
    return [photo(1), photo(2), photo(3, 64, 64)]


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rerender(backgrounds, sample: dict, bodies=(), size: int = SIZE):
    """The composite a manifest entry describes, rendered again from the recorded seed, crop and body."""
    bg = sample["background"]
    assert bg["scale"] == 1.0
    x0, y0, x1, y1 = bg["crop"]
    assert (x1 - x0, y1 - y0) == (size, size)
    crop = np.ascontiguousarray(backgrounds[bg["index"]][y0:y1, x0:x1])
    body = None
    if sample["body"] is not None:
        b = bodies[sample["body"]["index"]]
        body = (b.image, b.mask)
    return render_alpha_composite(crop, sample["render_seed"], sample["kind"], body)


def test_writes_images_alphas_trimaps_and_manifest(tmp_path, backgrounds):
    out = tmp_path / "set"
    manifest = write_alpha_set(out, backgrounds, 3, seed=5, size=SIZE, source={"kind": "test"})
    for sub, dtype, shape in (("images", np.uint8, (SIZE, SIZE, 3)), ("alphas", np.uint16, (SIZE, SIZE)),
                              ("trimaps", np.uint8, (SIZE, SIZE))):
        assert sorted(p.name for p in (out / sub).iterdir()) == [f"{s}.png" for s in STEMS]
        for stem in STEMS:
            arr = cv2.imread(str(out / sub / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            assert arr.dtype == dtype and arr.shape == shape
    assert sorted(p.name for p in out.iterdir()) == ["alphas", "images", "manifest.json", "trimaps"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["format"] == "finecut synthetic alpha set" and on_disk["synthetic"] is True
    assert on_disk["complete"] is True
    assert (on_disk["seed"], on_disk["count"], on_disk["size"]) == (5, 3, SIZE)
    assert on_disk["kinds"] == ["hair", "fur", "wires", "cutout"]
    assert on_disk["finecut_version"] == "0.1.0"
    assert on_disk["renderer"]["supersample"] == 4 and on_disk["renderer"]["config"]["layers"] == 4
    assert on_disk["source"] == {"kind": "test"}
    assert [s["stem"] for s in on_disk["samples"]] == STEMS
    assert [s["kind"] for s in on_disk["samples"]] == ["hair", "fur", "wires"]
    # three samples, three backgrounds: each is used once (a seeded permutation)
    assert sorted(s["background"]["index"] for s in on_disk["samples"]) == [0, 1, 2]
    assert all(s["body"] is None for s in on_disk["samples"])
    total = sum(s["fractional_pixels"] for s in on_disk["samples"])
    assert total > 0
    assert on_disk["stats"]["all"]["pixels"] == 3 * SIZE * SIZE
    assert on_disk["stats"]["all"]["fractional_fraction"] == pytest.approx(total / (3 * SIZE * SIZE), abs=1e-6)


def test_same_seed_same_bytes_other_seed_other_set(tmp_path, backgrounds):
    write_alpha_set(tmp_path / "a", backgrounds, 3, seed=11, size=SIZE)
    write_alpha_set(tmp_path / "b", backgrounds, 3, seed=11, size=SIZE)
    write_alpha_set(tmp_path / "c", backgrounds, 3, seed=12, size=SIZE)
    a, b, c = (files_of(tmp_path / n) for n in "abc")
    assert len(a) == 10 and a == b
    assert a.keys() == c.keys()
    for sub in ("images", "alphas"):
        for stem in STEMS:
            assert a[f"{sub}/{stem}.png"] != c[f"{sub}/{stem}.png"]
    # a smaller set is the first samples of the larger one
    write_alpha_set(tmp_path / "d", backgrounds, 2, seed=11, size=SIZE)
    d = files_of(tmp_path / "d")
    assert all(d[k] == a[k] for k in d if k != "manifest.json")
    assert json.loads(d["manifest.json"])["samples"] == json.loads(a["manifest.json"])["samples"][:2]


def test_reads_back_through_alpha_folder_with_the_rendered_alpha(tmp_path, backgrounds):
    out = tmp_path / "set"
    manifest = write_alpha_set(out, backgrounds, 3, seed=3, size=SIZE)
    dataset = AlphaFolder(out)
    assert len(dataset) == 3
    for i, entry in enumerate(manifest["samples"]):
        sample = dataset[i]
        comp = rerender(backgrounds, entry)
        assert sample.name == entry["stem"]
        np.testing.assert_array_equal(sample.image, comp.image)
        alpha = sample.meta["alpha"]
        assert alpha.dtype == np.float32 and alpha.shape == (SIZE, SIZE)
        assert np.abs(alpha.astype(np.float64) - comp.alpha).max() <= 0.5 / 65535 + 1e-6
        np.testing.assert_array_equal(sample.gt, (alpha >= 0.5).astype(np.int8))
        trimap = cv2.imread(str(out / "trimaps" / f"{entry['stem']}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(sample.meta["alpha_region"], trimap == 128)
        assert entry["box"] == list(comp.box)
        assert entry["fractional_pixels"] == int(((alpha > 0) & (alpha < 1)).sum())
    # thin strands are fractional: every kind here has fractional pixels
    assert all(e["fractional_pixels"] > 0 for e in manifest["samples"])


def test_trimap_unknown_band_covers_every_fractional_pixel(tmp_path, backgrounds):
    write_alpha_set(tmp_path / "band3", backgrounds, 3, seed=4, size=SIZE, trimap_band=3)
    write_alpha_set(tmp_path / "band0", backgrounds, 3, seed=4, size=SIZE, trimap_band=0)
    for stem in STEMS:
        alpha = cv2.imread(str(tmp_path / "band3" / "alphas" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        t3 = cv2.imread(str(tmp_path / "band3" / "trimaps" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        t0 = cv2.imread(str(tmp_path / "band0" / "trimaps" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        fractional = (alpha > 0) & (alpha < 65535)
        assert fractional.any()
        assert set(np.unique(t3)) <= {0, 128, 255}
        assert (t3[fractional] == 128).all()
        np.testing.assert_array_equal(t0 == 128, fractional)  # no dilation: exactly the fractional pixels
        assert (t3 == 128).sum() > fractional.sum()  # dilated
        outside = t3 != 128
        np.testing.assert_array_equal(t3[outside] == 255, alpha[outside] == 65535)
        np.testing.assert_array_equal(t3[outside] == 0, alpha[outside] == 0)


def test_alpha_trimap_and_quantize_on_a_known_map():
    alpha = np.zeros((9, 9), np.float32)
    alpha[:, 5:] = 1.0
    alpha[4, 4] = 0.25
    a16 = quantize_alpha(alpha)
    assert a16.dtype == np.uint16 and a16[4, 4] == 16384 and a16[0, 8] == 65535 and a16[0, 0] == 0
    t = alpha_trimap(a16, 1)
    expected = np.where(alpha == 1.0, 255, 0).astype(np.uint8)
    expected[3:6, 3:6][cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)).astype(bool)] = 128  # the pixel, dilated
    np.testing.assert_array_equal(t, expected)
    assert (t == 128).sum() == int(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)).sum())
    np.testing.assert_array_equal(alpha_trimap(a16, 0) == 128, a16 == 16384)


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path, backgrounds):
    out = tmp_path / "set"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FinecutError, match="not empty"):
        write_alpha_set(out, backgrounds, 3, seed=0, size=SIZE)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written

    fresh = tmp_path / "fresh"
    write_alpha_set(fresh, backgrounds, 3, seed=0, size=SIZE)
    before = files_of(fresh)
    with pytest.raises(FinecutError, match="not empty"):
        write_alpha_set(fresh, backgrounds, 3, seed=1, size=SIZE)
    assert files_of(fresh) == before
    # overwrite replaces the previous set, removing its samples the new one does not have
    write_alpha_set(fresh, backgrounds, 2, seed=1, size=SIZE, overwrite=True)
    assert sorted(p.name for p in (fresh / "alphas").iterdir()) == ["0000-hair.png", "0001-fur.png"]
    assert len(AlphaFolder(fresh)) == 2
    assert files_of(fresh)["images/0000-hair.png"] != before["images/0000-hair.png"]
    # files no manifest accounts for would join the set: refused even with overwrite
    (fresh / "images" / "stray.png").write_bytes(before["images/0000-hair.png"])
    with pytest.raises(FinecutError, match="stray.png"):
        write_alpha_set(fresh, backgrounds, 2, seed=2, size=SIZE, overwrite=True)


def test_rejects_bad_arguments(tmp_path, backgrounds):
    with pytest.raises(FinecutError, match="kinds"):
        write_alpha_set(tmp_path / "x", backgrounds, 3, seed=0, size=SIZE, kinds=["hair", "smoke"])
    with pytest.raises(FinecutError, match="uint8"):
        write_alpha_set(tmp_path / "x", [np.zeros((40, 40), np.uint8)], 1, seed=0, size=SIZE)
    with pytest.raises(FinecutError, match="count"):
        write_alpha_set(tmp_path / "x", backgrounds, 0, seed=0, size=SIZE)
    assert not (tmp_path / "x").exists()


def test_small_photos_are_enlarged_to_the_crop(tmp_path):
    small = photo(7, 30, 40)
    manifest = write_alpha_set(tmp_path / "s", [small], 1, seed=0, size=SIZE)
    bg = manifest["samples"][0]["background"]
    assert bg["scale"] == pytest.approx(SIZE / 30, abs=1e-5)
    assert bg["crop"][2] - bg["crop"][0] == SIZE and bg["crop"][3] - bg["crop"][1] == SIZE
    assert cv2.imread(str(tmp_path / "s" / "images" / "0000-hair.png")).shape == (SIZE, SIZE, 3)


def tiny_bank() -> ObjectBank:
    """Eight 40x50 images, one object each (a rectangle), named so that some fall in the validation split."""
    images, names, chunks, objects, offset = [], [], [], [], 0
    for k in range(8):
        images.append(photo(20 + k, 40, 50))
        names.append(f"Toy/img{k}.jpg")
        mask = np.zeros((40, 50), bool)
        mask[5:5 + 20 + k, 8:44] = True
        bits = np.packbits(mask.reshape(-1))
        chunks.append(bits)
        objects.append(BankObject(k, offset, (8, 5, 44, 25 + k), int(mask.sum()), 0))
        offset += bits.size
    return ObjectBank(images, names, [0] * 8, np.concatenate(chunks), objects, ["Toy"])


def test_held_out_photos_are_the_validation_split_only(tmp_path):
    bank = tiny_bank()
    train_idx, val_idx = bank.split(0.5)
    assert len(train_idx) and len(val_idx)
    photos, bodies = held_out_photos(bank, 0.5, min_body_side=8)
    val_images = sorted(bank.objects[int(i)].image_index for i in val_idx)
    assert [p.source["index"] for p in photos] == val_images
    assert [p.source["name"] for p in photos] == [bank.image_names[k] for k in val_images]
    assert all(p.source["dataset"] == "Toy" for p in photos)
    for p in photos:
        np.testing.assert_array_equal(p.image, bank.images[p.source["index"]])
    assert sorted(b.source["index"] for b in bodies) == sorted(int(i) for i in val_idx)
    for b in bodies:
        obj = bank.objects[b.source["index"]]
        assert b.mask.all() and b.mask.shape == (obj.bbox[3] - obj.bbox[1], obj.bbox[2] - obj.bbox[0])
        assert b.image.shape == b.mask.shape + (3,)
    # bodies: with probability 1 every non-wire sample uses one, recorded in the manifest and rendered from it
    manifest = write_alpha_set(tmp_path / "bank", photos, 3, seed=0, size=32, kinds=["cutout", "wires", "fur"],
                               bodies=bodies, body_probability=1.0)
    used = [s["body"] for s in manifest["samples"]]
    assert used[1] is None and used[0] is not None and used[2] is not None
    by_index = {b.source["index"]: b for b in bodies}
    for entry in manifest["samples"]:
        assert entry["background"]["index"] in val_images
        if entry["body"] is not None:
            b = by_index[entry["body"]["index"]]
            x0, y0, x1, y1 = entry["background"]["crop"]
            crop = np.ascontiguousarray(photos[[p.source["index"] for p in photos].index(entry["background"]["index"])]
                                        .image[y0:y1, x0:x1])
            comp = render_alpha_composite(crop, entry["render_seed"], entry["kind"], (b.image, b.mask))
            alpha = AlphaFolder(tmp_path / "bank")[manifest["samples"].index(entry)].meta["alpha"]
            assert np.abs(alpha - comp.alpha).max() <= 0.5 / 65535 + 1e-6
    # too strict a body size leaves none
    assert held_out_photos(bank, 0.5, min_body_side=1000)[1] == []


def test_photo_folder_backgrounds_and_the_script(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"p{k}.png"), cv2.cvtColor(photo(30 + k), cv2.COLOR_RGB2BGR))
    (folder / "readme.txt").write_text("not an image")
    photos = folder_photos(folder)
    assert [p.source["name"] for p in photos] == ["p0.png", "p1.png"]
    np.testing.assert_array_equal(photos[1].image, photo(31))
    assert isinstance(photos[0], Photo)

    spec = importlib.util.spec_from_file_location("make_alpha_set", ROOT / "benchmarks" / "make_alpha_set.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out"
    argv = ["--photos", str(folder), "--out", str(out), "--count", "2", "--size", "32", "--seed", "9"]
    assert script.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == {"kind": "photo folder", "photos": str(folder)}
    assert manifest["seed"] == 9 and [s["stem"] for s in manifest["samples"]] == ["0000-hair", "0001-fur"]
    assert {s["background"]["name"] for s in manifest["samples"]} == {"p0.png", "p1.png"}
    assert len(AlphaFolder(out)) == 2
    assert script.main(argv) == 2  # non-empty: refused
    assert script.main(argv + ["--overwrite"]) == 0
    assert script.main(["--bank", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o2")]) == 2


def test_cutout_class_is_a_body(tmp_path, backgrounds):
    mask = np.zeros((30, 30), bool)
    mask[4:26, 6:24] = True
    body = CutOut(photo(40, 30, 30), mask, {"dataset": "mine", "index": 0})
    manifest = write_alpha_set(tmp_path / "c", backgrounds, 1, seed=0, size=SIZE, kinds=["cutout"], bodies=[body],
                               body_probability=1.0)
    assert manifest["samples"][0]["body"] == {"dataset": "mine", "index": 0}
    assert manifest["bodies"] == 1
