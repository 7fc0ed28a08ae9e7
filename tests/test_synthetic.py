"""Synthetic training views: thin structures and cutouts composited onto bank photos, and the sampler's use of them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.morphology import skeletonize

from finecut.errors import FinecutError
from finecut.prompts import ClickKind
from finecut.training.augment import ViewConfig
from finecut.training.batch import BatchSampler
from finecut.training.clicks import ClickSimConfig
from finecut.training.objects import BankObject, ObjectBank
from finecut.training.synthetic import (KINDS, STRUCTURES, SYNTHETIC_OBJECT_ID, SyntheticConfig, SyntheticPool,
                                        synthetic_view)

NO_JITTER = ViewConfig(size=112, hi_factor=2, brightness=0.0, contrast=0.0, saturation=0.0)


def _bank(images: list[np.ndarray], masks: list[tuple[int, np.ndarray]]) -> ObjectBank:
    """An in-memory bank: ``masks`` are (image index, bool mask) pairs."""
    chunks, objects, offset = [], [], 0
    for image_index, mask in masks:
        ys, xs = np.nonzero(mask)
        bits = np.packbits(mask.reshape(-1))
        chunks.append(bits)
        objects.append(BankObject(image_index, offset, (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                                        int(ys.max()) + 1), int(mask.sum()), 0))
        offset += bits.size
    return ObjectBank(images, [f"img{i}" for i in range(len(images))], [0] * len(images), np.concatenate(chunks),
                      objects, ["test"])


def _ellipse(h: int, w: int, centre: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return mask.astype(bool)


@pytest.fixture()
def flat_bank() -> ObjectBank:
    """Photos that are one flat grey, so every structure pixel is visible against a known background."""
    images = [np.full((120, 160, 3), 128, np.uint8) for _ in range(3)]
    return _bank(images, [(i, _ellipse(120, 160, (80, 60), (30, 20))) for i in range(3)])


@pytest.fixture()
def photo_bank() -> ObjectBank:
    rng = np.random.default_rng(5)
    images = []
    for _ in range(3):
        noise = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
        images.append(cv2.resize(noise, (160, 120), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8))
    return _bank(images, [(i, _ellipse(120, 160, (70 + 5 * i, 60), (35, 25))) for i in range(3)])


@pytest.mark.parametrize("kind", KINDS)
def test_views_have_the_view_layout(photo_bank: ObjectBank, kind: str) -> None:
    view = synthetic_view(photo_bank, np.random.default_rng(0), ViewConfig(size=112, hi_factor=2), kind=kind)
    assert view.image.shape == (112, 112, 3) and view.image.dtype == np.uint8
    assert view.mask.shape == (112, 112) and view.mask.dtype == bool
    assert view.image_hi.shape == (224, 224, 3) and view.image_hi.dtype == np.uint8
    assert view.mask_hi.shape == (224, 224) and view.mask_hi.dtype == bool
    assert view.mask.sum() >= ViewConfig().min_object_pixels
    assert 0 < view.mask_hi.mean() < 0.95


def _mean_width(mask: np.ndarray) -> float:
    return float(mask.sum()) / max(1, int(skeletonize(mask).sum()))


@pytest.mark.parametrize(("kind", "max_width"), [("wires", 7.0), ("string", 3.0), ("hair", 4.0), ("vessels", 8.0)])
def test_structures_are_thin(kind: str, max_width: float) -> None:
    cfg = SyntheticConfig()
    for seed in range(4):
        alpha = STRUCTURES[kind](np.random.default_rng(seed), 224, cfg)
        mask = alpha >= 0.5
        assert alpha.dtype == np.float32 and alpha.min() >= 0.0 and alpha.max() <= 1.0
        assert mask.sum() > 50, f"{kind} seed {seed}: empty structure"
        assert _mean_width(mask) <= max_width, f"{kind} seed {seed}: mean width {_mean_width(mask):.2f}"
        # anti-aliased: partial coverage exists along the edges
        assert ((alpha > 0.05) & (alpha < 0.95)).any()


def test_fence_is_a_mesh_of_thin_bars() -> None:
    alpha = STRUCTURES["fence"](np.random.default_rng(3), 224, SyntheticConfig())
    mask = alpha >= 0.5
    assert _mean_width(mask) <= 6.0
    n_holes, _ = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    assert n_holes > 5  # a mesh leaves many separate background cells


@pytest.mark.parametrize("kind", ["wires", "string", "vessels", "fence", "hair"])
def test_image_and_mask_agree(flat_bank: ObjectBank, kind: str) -> None:
    for seed in range(3):
        view = synthetic_view(flat_bank, np.random.default_rng(seed), NO_JITTER, kind=kind)
        img = view.image_hi.astype(np.float32)
        on = np.abs(img[view.mask_hi] - 128).mean()
        assert on >= 25, f"{kind} seed {seed}: structure pixels barely differ from the background ({on:.1f})"
        far = ~cv2.dilate(view.mask_hi.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        assert (view.image_hi[far] == 128).all(), f"{kind} seed {seed}: paint outside the mask"


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_given_the_rng(photo_bank: ObjectBank, kind: str) -> None:
    a = synthetic_view(photo_bank, np.random.default_rng(7), ViewConfig(size=64), kind=kind)
    b = synthetic_view(photo_bank, np.random.default_rng(7), ViewConfig(size=64), kind=kind)
    c = synthetic_view(photo_bank, np.random.default_rng(8), ViewConfig(size=64), kind=kind)
    for name in ("image", "mask", "image_hi", "mask_hi"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.image_hi, c.image_hi)


def _erode(mask: np.ndarray) -> np.ndarray:
    """2 px inside the mask (the frame's border counts as outside)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0).astype(bool)


BOTH_PHOTOS = SyntheticPool(objects=np.array([0]), images=np.array([0, 1]))  # cut from 0, paste onto 1


def _cutout_bank() -> ObjectBank:
    """Image 0: blue with a green ellipse (the object); image 1: flat red, no objects (backgrounds only)."""
    img0 = np.zeros((120, 160, 3), np.uint8)
    img0[:] = (0, 0, 255)
    ellipse = _ellipse(120, 160, (80, 60), (40, 25))
    img0[ellipse] = (0, 255, 0)
    img1 = np.zeros((120, 160, 3), np.uint8)
    img1[:] = (255, 0, 0)
    return _bank([img0, img1], [(0, ellipse)])


def test_cutout_lands_where_its_mask_says() -> None:
    bank = _cutout_bank()
    cfg = SyntheticConfig(occluder_probability=0.0)
    for seed in range(4):
        view = synthetic_view(bank, np.random.default_rng(seed), NO_JITTER, cfg, kind="cutout", pool=BOTH_PHOTOS)
        inner = _erode(view.mask_hi)
        outer = ~cv2.dilate(view.mask_hi.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert inner.sum() > 100
        pix_in, pix_out = view.image_hi[inner].astype(int), view.image_hi[outer].astype(int)
        assert (pix_in[:, 1] > 200).all() and (pix_in[:, 0] < 40).all() and (pix_in[:, 2] < 40).all()
        assert (pix_out[:, 0] > 200).all() and (pix_out[:, 1] < 40).all()  # the red background photo
        # the pasted object is a scaled ellipse: one blob, mostly convex
        n, _ = cv2.connectedComponents(view.mask_hi.astype(np.uint8))
        assert n == 2


def test_occluded_cutout_has_holes_in_its_mask() -> None:
    bank = _cutout_bank()
    cfg = SyntheticConfig(occluder_probability=1.0, cutout_scale=(0.7, 0.8))
    holes = 0
    for seed in range(4):
        view = synthetic_view(bank, np.random.default_rng(seed), NO_JITTER, cfg, kind="cutout", pool=BOTH_PHOTOS)
        green = (view.image_hi[..., 1] > 200) & (view.image_hi[..., 0] < 40) & (view.image_hi[..., 2] < 40)
        inner = _erode(view.mask_hi)
        assert green[inner].mean() > 0.95  # where the mask is set the object shows
        filled = np.zeros_like(view.mask_hi, np.uint8)
        contours, _ = cv2.findContours(view.mask_hi.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(filled, contours, -1, 1, -1)
        holes += int(filled.sum() > view.mask_hi.sum() or len(contours) > 1)  # wire cut or split the object
    assert holes >= 2


def test_pool_restricts_backgrounds_and_objects() -> None:
    bank = _cutout_bank()
    pool = SyntheticPool.of(bank, np.array([0]))
    assert pool.objects.tolist() == [0] and pool.images.tolist() == [0]
    with pytest.raises(FinecutError):
        SyntheticPool.of(bank, np.array([], dtype=np.int64))


def test_bad_kind_or_weights_raise() -> None:
    with pytest.raises(FinecutError, match="kind"):
        synthetic_view(_cutout_bank(), np.random.default_rng(0), NO_JITTER, kind="laser")
    with pytest.raises(FinecutError, match="kind_weights"):
        SyntheticConfig(kind_weights={"ropes": 1.0})


def _sampler(bank: ObjectBank, seed: int, **kwargs: float) -> BatchSampler:
    return BatchSampler(bank, np.arange(len(bank)), {0: 1.0}, ViewConfig(size=64), ClickSimConfig(), 0.0,
                        np.random.default_rng(seed), **kwargs)


def test_sampler_honours_synthetic_probability(photo_bank: ObjectBank) -> None:
    batch = _sampler(photo_bank, 0, synthetic_probability=1.0).sample(3)
    assert batch.object_ids == [SYNTHETIC_OBJECT_ID] * 3
    assert batch.images_hi.shape == (3, 3, 128, 128) and batch.masks.shape == (3, 1, 64, 64)
    for mask, clicks in zip(batch.masks_np, batch.clicks):
        assert clicks and clicks[0].kind == ClickKind.POSITIVE and mask[clicks[0].y, clicks[0].x]
    # probability 0 keeps the sampler's old behaviour (same random stream, bank objects only)
    old, new = _sampler(photo_bank, 1).sample(3), _sampler(photo_bank, 1, synthetic_probability=0.0).sample(3)
    assert new.object_ids == old.object_ids and all(i >= 0 for i in new.object_ids)
    assert np.array_equal(new.masks_np, old.masks_np)
    mixed = _sampler(photo_bank, 2, synthetic_probability=0.5).sample(12)
    assert 0 < mixed.object_ids.count(SYNTHETIC_OBJECT_ID) < 12


def test_cracks_are_dark_thin_and_branching_on_a_surface(photo_bank: ObjectBank) -> None:
    """The crack scene: the crack is darker than the surface beside it, 1-5 px wide (a 7x7 erosion leaves almost
    nothing), and it forks (its skeleton has branch points)."""
    from skimage.morphology import skeletonize

    for seed in range(4):
        view = synthetic_view(photo_bank, np.random.default_rng(seed), NO_JITTER, kind="crack")
        mask = view.mask_hi
        assert mask.sum() > 50
        grey = view.image_hi.astype(np.float32).mean(axis=2)
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~mask
        assert grey[mask].mean() < grey[ring].mean() - 15
        core = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        assert core.sum() <= 0.02 * mask.sum()
        skeleton = skeletonize(mask)
        neighbours = cv2.filter2D(skeleton.astype(np.uint8), -1, np.ones((3, 3), np.float32)) - 1
        assert ((neighbours >= 3) & skeleton).any()  # a fork somewhere


def test_held_out_thin_samples_are_seeded_thin_structures_on_validation_photos(photo_bank: ObjectBank) -> None:
    """The held-out thin views the NTClick checks draw (benchmarks/heldout_thin.py, ntclick_click_response.py): one
    sample per view at the asked size, binary ground truth with a thin object, the same views for the same seed."""
    from finecut.training.validation import held_out_thin_samples

    a = held_out_thin_samples(photo_bank, 3, 96, 1.0, seed=4)
    b = held_out_thin_samples(photo_bank, 3, 96, 1.0, seed=4)
    assert [s.name for s in a] == ["thin-000", "thin-001", "thin-002"]
    for s, t in zip(a, b, strict=True):
        assert s.image.shape == (96, 96, 3) and s.gt.shape == (96, 96) and set(np.unique(s.gt)) <= {0, 1}
        assert 0 < s.gt.mean() < 0.5
        assert np.array_equal(s.image, t.image) and np.array_equal(s.gt, t.gt)
    cracks = held_out_thin_samples(photo_bank, 1, 96, 1.0, seed=4, kinds={"crack": 1.0})
    assert cracks[0].gt.any()
