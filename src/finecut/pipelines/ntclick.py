"""NTClick inference: ECP (coarse FBU map at low resolution) -> HRR (full-resolution refinement of the uncertain band).

Per click:
1. **Target crop** (optional zoom-in, FocalClick's: :class:`~finecut.pipelines.skeleton.CropPipeline` runs the shared
   steps): the box of the previous mask, the prompt box and the new click, expanded by ``expand``; the first click of
   an object sees the whole image.
2. **ECP** (with ``flip_tta``, a departure: averaged with its call on the mirrored crop, flipped back) on the crop
   resized so its long side is ``ecp_size`` (default: the ECP's ``img_size``) and both sides are
   multiples of the ECP's ``input_multiple`` (32), so the network never pads its input: the ECP trains on unpadded
   square views, and an input padded inside it is out of that distribution (``benchmarks/ecp_input_padding.py``
   measures what padding does; docs/ntclick.md gives the numbers). With the prompt maps [previous mask, positive, negative, tolerant] -> 3-class FBU probabilities (background,
   foreground, uncertain), upsampled to the crop's full resolution. Outside the crop the previous mask gives the FBU
   labels (foreground where it is set, background elsewhere).
3. **HRR** on the full-resolution RGB + one-hot FBU map, but only over the bounding box of the uncertain region plus
   ``hrr_margin`` pixels, grown (with real image content where the image allows) to a multiple of the HRR's padding
   unit (128), so the expensive pass never sees the large certain areas; inside the box its two finest decoder stages
   run only on the 128-pixel tiles that hold a pixel it decides (the same probabilities there, the rest never
   read). With ``hrr_scope="tolerant"`` (a departure) the HRR decides only the uncertain components near a tolerant
   click and the ECP's fg / bg odds the others; with ``hrr_scope="session"`` the HRR decides every uncertain pixel
   once the prompts hold a tolerant click, and the ECP's odds decide them all until then (precise clicks alone: an
   ordinary object boundary). An HRR with a click input (``click_channels``, a departure) also gets every click as
   [positive, negative, tolerant] disks of ``click_radius`` over its box.
4. Click rules on the HRR's decisions (departures from the paper, chosen on held-out data; docs/ntclick.md):
   :func:`open_near_tolerant` (off by default; ``tolerant_open_radius``: the ECP's background near a tolerant click
   becomes uncertain, so the HRR decides it),
   :func:`grow_near_tolerant` (hysteresis from tolerant clicks, ``grow_threshold``), :func:`lower_near_tolerant` (off
   by default; ``local_threshold`` within ``local_radius`` of a tolerant click) and :func:`drop_near_negative`
   (negative clicks cut HRR-decided components, ``negative_rule``, but not one within ``tolerant_radius`` of a
   tolerant click); ``negative_rule="paper"`` with
   ``grow_threshold=None`` is the paper's pipeline.
5. Final mask ``FBU foreground ∪ (FBU uncertain ∧ HRR > threshold)`` (:func:`finecut.fbu.final_mask`); ``probs`` is
   :func:`finecut.fbu.combine_probs` (1 on foreground, 0 on background, the HRR probability where uncertain).
6. With ``progressive_merge`` (a departure, FocalClick's :class:`~finecut.pipelines.transforms.ProgressiveMerge`):
   with a prior mask, or after ``merge_after`` clicks from scratch, the previous answer stands everywhere but the
   changed component under the new click.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from finecut import fbu
from finecut.engines.base import EngineOutput
from finecut.errors import FinecutError
from finecut.model_inputs import crop_tensor, normalize, resize_tensor
from finecut.pipelines.geometry import components_touching, integer_box, mask_box, net_size
from finecut.pipelines.skeleton import CropPipeline, Step
from finecut.pipelines.transforms import Crop, FlipTTA, IntBox, ProgressiveMerge
from finecut.prompts import Click, ClickKind, CropTransform, click_disks, disks_of_kind

DEFAULTS: dict[str, Any] = {
    "ecp_size": None,  # None: the ECP's img_size
    "flip_tta": False,  # the ECP's logits averaged with its call on the mirrored crop (a departure from the paper)
    "zoom_in": True,
    "expand": 1.4,
    "min_crop": 48,
    "click_radius": 5.0,
    "hrr": True,  # False: uncertain pixels follow the ECP alone (P(fg) > P(bg))
    # which uncertain pixels the HRR decides: "all" (the paper), or "tolerant" — only the uncertain components that come
    # within tolerant_radius of a tolerant click ("fine structure near here"); the ECP's odds decide the rest — or
    # "session": all of them once the prompts hold any tolerant click, none before
    "hrr_scope": "all",
    "hrr_margin": 16,
    "threshold": 0.5,
    # negative clicks: "paper" = the paper's final mask; "disk" = background within click_radius of each negative click;
    # "component" = that, and the HRR-decided foreground connected to such a disk is dropped too; "detached" = like
    # "component", but only components that do not touch the ECP's certain foreground (not the rim of an object)
    "negative_rule": "detached",
    # hysteresis from tolerant clicks ("fine structure near here"): uncertain pixels the HRR gives more than this
    # lower threshold join the mask when their connected component comes within tolerant_radius of a tolerant click
    # (None: off)
    "grow_threshold": 0.3,
    "tolerant_radius": 10.0,
    # tolerant clicks open the map (a departure): pixels within this radius of a tolerant click that the ECP calls
    # background become uncertain, so the HRR decides them — "fine structure near here" even where the ECP saw none
    # (None: off)
    "tolerant_open_radius": None,
    # a local threshold near tolerant clicks (a departure): uncertain pixels within local_radius of a tolerant click
    # whose HRR probability is above local_threshold join the mask — a later tolerant click lowers the bar where it is
    # given, since the HRR sees no clicks (None: off)
    "local_threshold": None,
    "local_radius": 20.0,
    # FocalClick's Progressive Merge (a departure from the paper): with a prior mask, or after merge_after clicks from
    # scratch, only the changed component under the new click changes the mask
    "progressive_merge": False,
    "merge_after": 10,
}
NEGATIVE_RULES = ("paper", "disk", "component", "detached")
HRR_SCOPES = ("all", "tolerant", "session")


def grow_box(box: tuple[int, int, int, int], multiple: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Grow ``box`` (x0, y0, x1, y1) around its centre to sides that are multiples of ``multiple`` (capped by the image),
    shifted to stay inside the image."""
    x0, y0, x1, y1 = box

    def grow(a: int, b: int, limit: int) -> tuple[int, int]:
        side = min(limit, math.ceil((b - a) / multiple) * multiple)
        start = (a + b) // 2 - side // 2
        start = int(np.clip(start, 0, limit - side))
        return start, start + side

    nx0, nx1 = grow(x0, x1, width)
    ny0, ny1 = grow(y0, y1, height)
    return nx0, ny0, nx1, ny1


def pass_threshold(hrr_probs: np.ndarray, pixels: np.ndarray, low: float, threshold: float) -> None:
    """In place: ``hrr_probs`` at ``pixels`` (all above ``low``) remapped from (low, 1] onto (threshold, 1], order
    kept, so they pass ``threshold`` — the shared step of the tolerant-click rules."""
    hrr_probs[pixels] = threshold + (1 - threshold) * (hrr_probs[pixels] - low) / (1 - low)


def grow_near_tolerant(labels: np.ndarray, hrr_probs: np.ndarray, clicks: tuple[Click, ...], low: float | None,
                       threshold: float, radius: float) -> np.ndarray:
    """Hysteresis from tolerant clicks, in place: uncertain pixels with HRR probability above ``low`` whose connected
    component comes within ``radius`` of a tolerant click are remapped from (low, 1] onto (threshold, 1] (order kept),
    so they pass ``threshold``. Returns the grown pixels (none when ``low`` is None or not below ``threshold``)."""
    if low is None or low >= threshold:
        return np.zeros(labels.shape, bool)
    seeds = disks_of_kind(clicks, ClickKind.TOLERANT, labels.shape, radius)
    grown = components_touching((labels == fbu.FBU_UNCERTAIN) & (hrr_probs > low), seeds)
    pass_threshold(hrr_probs, grown, low, threshold)
    return grown


def open_near_tolerant(labels: np.ndarray, clicks: tuple[Click, ...], radius: float | None,
                       vetoed: np.ndarray) -> np.ndarray:
    """In place: background pixels of ``labels`` within ``radius`` of a tolerant click (and not ``vetoed`` by a
    negative click) become uncertain. Returns those pixels (none when ``radius`` is None)."""
    if not radius:
        return np.zeros(labels.shape, bool)
    opened = disks_of_kind(clicks, ClickKind.TOLERANT, labels.shape, radius)
    opened &= (labels == fbu.FBU_BACKGROUND) & ~vetoed
    labels[opened] = fbu.FBU_UNCERTAIN
    return opened


def lower_near_tolerant(labels: np.ndarray, hrr_probs: np.ndarray, clicks: tuple[Click, ...], low: float | None,
                        threshold: float, radius: float) -> np.ndarray:
    """Local threshold from tolerant clicks, in place: uncertain pixels within ``radius`` of a tolerant click with HRR
    probability above ``low`` are remapped from (low, 1] onto (threshold, 1] (order kept), so they pass ``threshold``.
    Unlike :func:`grow_near_tolerant` no connection is needed: the HRR has no click input, so on a thin structure it
    missed a later tolerant click otherwise changes nothing. Returns the pixels that passed."""
    if low is None or low >= threshold:
        return np.zeros(labels.shape, bool)
    near = disks_of_kind(clicks, ClickKind.TOLERANT, labels.shape, radius)
    remapped = near & (labels == fbu.FBU_UNCERTAIN) & (hrr_probs > low)
    passed = remapped & (hrr_probs <= threshold)
    pass_threshold(hrr_probs, remapped, low, threshold)
    return passed


def drop_near_negative(labels: np.ndarray, hrr_probs: np.ndarray, vetoed: np.ndarray, rule: str,
                       threshold: float, clicks: tuple[Click, ...] = (), tolerant_radius: float = 0.0) -> np.ndarray:
    """Negative-click rule, in place: HRR-decided foreground (uncertain ∧ HRR > threshold) whose connected component
    touches a negative click's disk (``vetoed``) is set to 0 — every such component under ``"component"``, only those
    not touching the ECP's certain foreground under ``"detached"``. A component within ``tolerant_radius`` of one of
    ``clicks``' tolerant clicks ("the structure near here is object") is never dropped — on a vessel tree the ECP may
    call nothing certain, the whole tree is one HRR-decided component, and a negative click on a false branch would
    erase it (the click's own disk is background all the same). Returns the dropped pixels."""
    if rule not in ("component", "detached"):
        return np.zeros(labels.shape, bool)
    decided = (labels == fbu.FBU_UNCERTAIN) & (hrr_probs > threshold)
    dropped = components_touching(decided, vetoed)
    if rule == "detached":
        dropped &= ~components_touching(decided, labels == fbu.FBU_FOREGROUND)
    if dropped.any() and any(c.kind == ClickKind.TOLERANT for c in clicks):
        dropped &= ~components_touching(decided, disks_of_kind(clicks, ClickKind.TOLERANT, labels.shape,
                                                               tolerant_radius))
    hrr_probs[dropped] = 0.0
    return dropped


def hrr_region(uncertain: np.ndarray, clicks: tuple[Click, ...], scope: str, tolerant_radius: float) -> np.ndarray:
    """(H, W) bool: the uncertain pixels the HRR decides under ``hrr_scope`` ``scope`` — all of them ("all"); all of
    them once ``clicks`` hold a tolerant click, none before ("session"); the uncertain components within
    ``tolerant_radius`` of a tolerant click ("tolerant")."""
    if scope == "all":
        return uncertain
    if scope == "session":
        return uncertain if any(c.kind == ClickKind.TOLERANT for c in clicks) else np.zeros_like(uncertain)
    return components_touching(uncertain, disks_of_kind(clicks, ClickKind.TOLERANT, uncertain.shape, tolerant_radius))


def click_pixel(shape: tuple[int, int], click: Click) -> tuple[int, int]:
    """(row, column) of ``click``'s pixel, clamped into an image of ``shape``."""
    h, w = shape
    return min(max(int(click.y), 0), h - 1), min(max(int(click.x), 0), w - 1)


def click_label(labels: np.ndarray, click: Click | None) -> str | None:
    """The FBU class ("background" / "foreground" / "uncertain") the final labels give ``click``'s pixel (None without
    a click): whether the newest click landed where the HRR can act (uncertain) or where the ECP already decided."""
    return None if click is None else fbu.FBU_CLASSES[int(labels[click_pixel(labels.shape, click)])]


def click_in(region: np.ndarray, click: Click | None) -> bool | None:
    """Whether ``click``'s pixel lies in ``region`` (None without a click)."""
    return None if click is None else bool(region[click_pixel(region.shape, click)])


def ecp_odds(crop_logits: torch.Tensor, crop: Crop, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32: the ECP's P(fg) / (P(fg) + P(bg)) inside the crop (``crop_logits``: (1, 3, crop_h, crop_w)),
    0 outside it — how the ECP alone would split an uncertain pixel. Computed as the sigmoid of the logit difference,
    which stays exact where the ECP is sure of "uncertain" and both probabilities underflow."""
    odds = torch.sigmoid(crop_logits[0, fbu.FBU_FOREGROUND] - crop_logits[0, fbu.FBU_BACKGROUND]).numpy()
    return crop.paste(np.zeros(shape, np.float32), odds)


class NTClickEngine(CropPipeline):
    """A trained :class:`~finecut.models.ntclick.NTClickNet` (``.ecp`` + ``.hrr``) behind the Engine interface (the
    shared steps are :class:`~finecut.pipelines.skeleton.CropPipeline`'s; :meth:`run` is ECP, HRR, click rules)."""

    name = "ntclick"
    method = "NTClick"
    defaults = DEFAULTS
    networks = ("ecp", "hrr")

    def check(self, net: nn.Module, options: Mapping[str, Any]) -> None:
        if options.get("negative_rule", "paper") not in NEGATIVE_RULES:
            raise FinecutError(f"NTClick negative_rule {options['negative_rule']!r}: use one of {NEGATIVE_RULES}")
        if options.get("hrr_scope", "all") not in HRR_SCOPES:
            raise FinecutError(f"NTClick hrr_scope {options['hrr_scope']!r}: use one of {HRR_SCOPES}")
        if not hasattr(net, "ecp") or not hasattr(net, "hrr"):
            raise FinecutError(f"the ntclick engine needs a model with .ecp and .hrr networks, got {type(net).__name__}")

    def setup(self, net: nn.Module) -> None:
        self.ecp = net.ecp
        self.hrr = net.hrr
        if self.options["ecp_size"] is None:
            self.options["ecp_size"] = int(self.ecp.config.img_size)

    def has_features(self, features: Any) -> bool:
        return isinstance(features, dict) and "full" in features

    def encode_image(self, image: np.ndarray) -> dict[str, Any]:
        """The normalized full image (HRR input, source of every ECP crop) and the ECP input of the whole image."""
        full = normalize(image, self.inputs)
        h, w = image.shape[:2]
        size_hw = self.input_size(w, h)
        return {"full": full, "whole_size": size_hw, "whole": resize_tensor(full, size_hw)}

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of the ECP input for a crop: long side ``ecp_size``, aspect kept, no padding needed."""
        return net_size(width, height, self.options["ecp_size"], self.ecp.config.input_multiple)

    # ----------------------------------------------------------------- helpers
    def _ecp_logits(self, step: Step) -> torch.Tensor:
        """(1, 3, crop_h, crop_w) FBU logits over the target crop, upsampled to full resolution."""
        crop, features = step.crop, step.features
        if crop.covers(*step.shape):  # the whole image: its ECP input was made once, by encode_image
            crop = replace(crop, size_hw=features["whole_size"])
            inp = features["whole"]
        else:
            inp = crop_tensor(features["full"], crop.box, crop.size_hw)  # normalised once, then resized with torch
        logits = FlipTTA.from_options(self.options)(self.ecp, inp, self.prompt_maps(step, crop))["logits"]
        return F.interpolate(logits, size=crop.shape, mode="bilinear", align_corners=False)

    def hrr_box(self, uncertain: np.ndarray) -> IntBox | None:
        """The region HRR runs on: the uncertain pixels' box plus the margin, grown to HRR's padding unit."""
        box = mask_box(uncertain)
        if box is None:
            return None
        h, w = uncertain.shape
        m = self.options["hrr_margin"]
        x0, y0, x1, y1 = box
        tight = integer_box((x0 - m, y0 - m, x1 + m, y1 + m), h, w)
        return grow_box(tight, int(self.hrr.config.pad_multiple), h, w)

    def _hrr_probs(self, full: torch.Tensor, labels: np.ndarray, box: IntBox, region: np.ndarray,
                   clicks: tuple[Click, ...]) -> np.ndarray:
        """HRR probabilities over ``box``; exact on the pixels of ``region`` (the ones the HRR decides), the finest
        decoder stages skip the tiles without any (:class:`~finecut.models.ntclick.NTClickHRR`). An HRR with a click
        input gets ``clicks`` as [positive, negative, tolerant] disks of ``click_radius`` over the box."""
        x0, y0, x1, y1 = box
        one_hot = torch.from_numpy(fbu.labels_to_one_hot(labels[y0:y1, x0:x1]))[None]
        needed = torch.from_numpy(np.ascontiguousarray(region[y0:y1, x0:x1]))[None]
        extra = {}
        if getattr(self.hrr.config, "click_channels", 0):
            transform = CropTransform(float(x0), float(y0), float(x1 - x0), float(y1 - y0), (y1 - y0, x1 - x0))
            extra["clicks"] = torch.from_numpy(click_disks(clicks, transform, self.options["click_radius"]))[None]
        logits = self.hrr(full[:, :, y0:y1, x0:x1], one_hot, needed, **extra)["logits"]
        return torch.sigmoid(logits[0, 0]).numpy()

    # ----------------------------------------------------------------- main
    def run(self, step: Step) -> EngineOutput:
        """ECP on the target crop (FBU labels; the previous mask's outside it), HRR on the uncertain band, click
        rules, final mask."""
        h, w = step.shape
        o = self.options
        prompts, crop = step.prompts, step.crop
        crop_logits = self._ecp_logits(step)
        # FBU labels (uint8: a 4096² map is 16 MB, not 128): the argmax of the logits, the same as of the softmax
        labels = np.where(step.prev_mask, fbu.FBU_FOREGROUND, fbu.FBU_BACKGROUND).astype(np.uint8)
        crop.paste(labels, fbu.probs_to_labels(crop_logits[0].numpy()))
        vetoed = np.zeros((h, w), bool)
        if o["negative_rule"] != "paper":
            vetoed = disks_of_kind(prompts.clicks, ClickKind.NEGATIVE, (h, w), max(o["click_radius"], 1.0))
            labels[vetoed] = fbu.FBU_BACKGROUND
        opened = open_near_tolerant(labels, prompts.clicks, o["tolerant_open_radius"], vetoed)
        if step.outside_box is not None:
            labels[step.outside_box] = fbu.FBU_BACKGROUND
        uncertain = labels == fbu.FBU_UNCERTAIN
        by_hrr = (hrr_region(uncertain, prompts.clicks, o["hrr_scope"], o["tolerant_radius"]) if o["hrr"]
                  else np.zeros((h, w), bool))
        hrr_probs = np.zeros((h, w), np.float32)
        box = self.hrr_box(by_hrr)
        if box is not None:
            bx0, by0, bx1, by1 = box
            hrr_probs[by0:by1, bx0:bx1] = self._hrr_probs(step.features["full"], labels, box, by_hrr,
                                                           prompts.clicks)
        by_ecp = uncertain & ~by_hrr
        if by_ecp.any():  # no HRR for these pixels: the ECP's foreground-vs-background odds decide
            hrr_probs[by_ecp] = ecp_odds(crop_logits, crop, (h, w))[by_ecp]
        grown = grow_near_tolerant(labels, hrr_probs, prompts.clicks, o["grow_threshold"], o["threshold"],
                                   o["tolerant_radius"])
        lowered = lower_near_tolerant(labels, hrr_probs, prompts.clicks, o["local_threshold"], o["threshold"],
                                      o["local_radius"])
        dropped = drop_near_negative(labels, hrr_probs, vetoed, o["negative_rule"], o["threshold"], prompts.clicks,
                                     o["tolerant_radius"])
        probs = fbu.combine_probs(labels, hrr_probs)
        mask = fbu.final_mask(labels, hrr_probs, o["threshold"])
        merge = ProgressiveMerge.from_options(o)
        merged = merge.applies(prompts, step.click)
        if merged:  # the mask follows the merged probabilities where the previous answer stands
            kept = merge(probs, step.prev, step.prev_mask, step.click, threshold=o["threshold"])
            mask[kept] = step.prev_mask[kept]
        hrr_pixels = 0 if box is None else (box[2] - box[0]) * (box[3] - box[1])
        hrr_scale = None if box is None else min(1.0, int(self.hrr.config.max_side) / max(box[2] - box[0],
                                                                                       box[3] - box[1]))
        state = {"hrr_box": list(box) if box is not None else None, "hrr_pixels": hrr_pixels, "hrr_scale": hrr_scale,
                 "click_label": click_label(labels, step.click), "click_by_hrr": click_in(by_hrr, step.click),
                 "uncertain_pixels": int(uncertain.sum()), "ecp_decided_pixels": int(by_ecp.sum()),
                 "grown_pixels": int(grown.sum()), "dropped_pixels": int(dropped.sum()),
                 "opened_pixels": int(opened.sum()), "lowered_pixels": int(lowered.sum()), "merged": merged}
        return EngineOutput(probs, state, mask=mask)
