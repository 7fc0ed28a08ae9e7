"""FocalClick inference: Target Crop -> Segmentor, Focus Crop -> Refiner, Progressive Merge.

Per click (steps 1 and the paste are :class:`~finecut.pipelines.skeleton.CropPipeline`'s, shared with NTClick):
1. **Target Crop** (:class:`~finecut.pipelines.transforms.ZoomIn`): the box of the previous mask and the new click,
   expanded by ``expand`` (1.4), resized so its long side is ``target_size`` (aspect kept; ``square_input`` resizes
   it to ``target_size`` squared, as the official code). The first click of an object (empty previous mask) sees the
   whole image, at ``first_target_size`` when that is set (e.g. a network that reads a whole scene best at its
   training size and a zoomed-in object best larger).
2. **Segmentor** on the crop with the prompt maps [previous mask, positive, negative, tolerant]; with ``flip_tta``
   averaged with its run on the flipped crop (:class:`~finecut.pipelines.transforms.FlipTTA`).
3. **Focus Crop**: the connected component of (coarse mask XOR previous mask) that holds the new click, its box expanded
   by ``focus_expand`` (1.4); when that component is missing or tiny, a fixed window around the click.
   The **Refiner** sees the original-resolution pixels of the focus crop plus RoIAligned segmentor maps, logits and
   features; its output replaces the coarse prediction inside the focus box.
4. **Progressive Merge** (:class:`~finecut.pipelines.transforms.ProgressiveMerge`; with a prior mask, and after
   ``merge_after`` clicks from scratch): only the component of (new mask XOR previous mask) under the new click
   changes the mask.
Outside the target crop the previous probabilities are kept; outside a prompt box the probabilities are 0.

Large photos: the per-image features hold an :class:`~finecut.pipelines.pyramid.ImagePyramid` (none below 1024 px
for a 256 px input), and a target crop of 4x or more the network input reads its pixels from the pyramid level
that still leaves 2x (its box moved outward onto that level's grid by :meth:`FocalClickEngine.place_crop`); the
refiner's image input is RoIAligned from the level that leaves its focus box 2x its input. For such
crops the segmentor's logits become probabilities before they are enlarged to the crop (one resize of a small map
instead of a sigmoid over millions of pixels; the refined focus box is computed as always). Smaller crops, and
so every benchmark image, run exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn as nn

from finecut.engines.base import EngineOutput
from finecut.errors import FinecutError
from finecut.model_inputs import crop_image, normalize, resize
from finecut.models.roi_align import roi_align
from finecut.pipelines.geometry import BoxF, expand_box, integer_box
from finecut.pipelines.pyramid import ImagePyramid
from finecut.pipelines.skeleton import CropPipeline, Step
from finecut.pipelines.transforms import Crop, FlipTTA, IntBox, ProgressiveMerge
from finecut.prompts import Click

DEFAULTS: dict[str, Any] = {
    "target_size": 256,
    "zoom_in": True,
    "expand": 1.4,
    "min_crop": 48,
    "focus": True,
    "focus_expand": 1.4,
    "focus_min": 32,
    "focus_fallback": 0.2,  # fallback focus window side, as a fraction of the target crop's long side
    "refiner_max": 256,
    "refiner_min": 64,
    "progressive_merge": True,
    "merge_after": 10,
    "flip_tta": False,
    "click_radius": 5.0,
    "square_input": False,  # resize the target crop to target_size x target_size (the official ZoomIn / ResizeTrans)
    # the input size of an object's first pass (nothing segmented yet: the whole image, or a box); None: target_size
    "first_target_size": None,
    # an object's first click or scribble runs twice, the second pass on the Target Crop of the first one's mask
    "zoom_first_pass": False,
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-clip(x, -30, 30)))`` computed in one new array (the same float operations, so the same bits)."""
    out = np.clip(x, -30, 30)
    np.negative(out, out=out)
    np.exp(out, out=out)
    out += 1.0
    return np.divide(1.0, out, out=out)


def _component_box(mask: np.ndarray, row: int, col: int) -> tuple[int, BoxF] | None:
    """Area and box (:func:`~finecut.pipelines.geometry.mask_box`'s) of the 8-connected component of ``mask`` (bool)
    holding (row, col), None when that pixel is not set: :func:`~finecut.pipelines.geometry.component_at`'s component,
    found by a flood fill that visits only it (a full-crop labelling costs tens of ms on a 12-megapixel photo)."""
    if not mask[row, col]:
        return None
    fill = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    area, _, _, (x, y, w, h) = cv2.floodFill(np.ascontiguousarray(mask).view(np.uint8), fill, (int(col), int(row)),
                                             1, 0, 0, 8 | cv2.FLOODFILL_MASK_ONLY | (1 << 8))
    return int(area), (float(x), float(y), float(x + w), float(y + h))


#: A target crop this many times the network input (or more) is read from the image pyramid and its logits become
#: probabilities before they are enlarged (see the module docstring).
LARGE_CROP = 4


@dataclass(frozen=True)
class FocalClickFeatures:
    """Per-image features: what the refiner's Focus Crops are RoIAligned from (the normalised image tensor; the uint8
    image on ONNX Runtime; None without a refiner), the image pyramid for large crops, and the refiner's source of
    each pyramid level (``refiner_levels[L - 1]`` for level L)."""

    refiner_input: Any
    pyramid: ImagePyramid
    refiner_levels: tuple[Any, ...] = ()

    def refiner_source(self, level: int) -> Any:
        """The refiner's source at pyramid ``level`` (0: the image)."""
        return self.refiner_input if level == 0 else self.refiner_levels[level - 1]


class FocalClickEngine(CropPipeline):
    """A trained :class:`~finecut.models.focalclick.FocalClickNet` behind the Engine interface (the shared steps are
    :class:`~finecut.pipelines.skeleton.CropPipeline`'s; :meth:`run` is segmentor, Focus Crop + refiner, merge)."""

    name = "focalclick"
    method = "FocalClick"
    defaults = DEFAULTS
    config_keys = ("zoom_in", "flip_tta")
    networks = ("segmentor", "refiner")
    features_type = FocalClickFeatures
    #: How the refiner's inputs are cut out of the image and the segmentor's maps (a runtime may replace it with an
    #: equal computation: :func:`finecut.onnx.runtime.roi_align`).
    roi_align = staticmethod(roi_align)

    def setup(self, net: nn.Module) -> None:
        # a plain interactive net (e.g. SimpleClick) is its own segmentor and has no refiner
        self.segmentor = getattr(net, "segmentor", net)
        self.refiner = getattr(net, "refiner", None)
        if self.refiner is None:
            self.options["focus"] = False
        first = self.options.get("first_target_size")
        if first is not None and (isinstance(first, bool) or not isinstance(first, (int, np.integer))
                                  or first < 16 or first % 16):
            raise FinecutError(f"FocalClick option first_target_size={first!r}: expected a multiple of 16 (or none)")

    def refiner_source(self, image: np.ndarray) -> Any:
        """What the refiner's focus crops are RoIAligned from: the normalised full image (a runtime may keep the
        uint8 image instead: :func:`finecut.onnx.runtime.keep_image`)."""
        return normalize(image, self.inputs)

    def encode_image(self, image: np.ndarray) -> FocalClickFeatures:
        """The refiner's source (none without a refiner) and the image pyramid (levels only for large images)."""
        pyramid = ImagePyramid.build(image, int(self.options["target_size"]))
        if self.refiner is None:
            return FocalClickFeatures(None, pyramid)
        levels = tuple(self.refiner_source(pixels) for pixels in pyramid.levels)
        return FocalClickFeatures(self.refiner_source(image), pyramid, levels)

    def place_crop(self, crop: Crop, features: FocalClickFeatures) -> Crop:
        """A crop of ``LARGE_CROP`` x the network input or more: read from the coarsest pyramid level that leaves
        2x, its box moved outward onto that level's grid (and its network size recomputed for the new box)."""
        if crop.scale < LARGE_CROP:
            return crop
        level = features.pyramid.level_for(crop.box, crop.size_hw)
        if level == 0:
            return crop
        x0, y0, x1, y1 = box = features.pyramid.snap(crop.box, level)
        return Crop(box, self.input_size(x1 - x0, y1 - y0, target=max(crop.size_hw)), level)

    def crop_sizer(self, prev_mask: np.ndarray) -> Callable[[int, int], tuple[int, int]]:
        """``first_target_size`` for an object's first pass (an empty previous mask), else ``target_size``."""
        first = self.options.get("first_target_size")
        if first and not prev_mask.any():
            return partial(self.input_size, target=int(first))
        return self.input_size

    # ----------------------------------------------------------------- helpers
    def _segment(self, image: np.ndarray, features: FocalClickFeatures, maps: torch.Tensor,
                 crop: Crop) -> dict[str, torch.Tensor]:
        # the segmentor sees the uint8 crop (from the crop's pyramid level) resized with OpenCV, then normalised
        inp = crop_image(*features.pyramid.source(crop.box, crop.level, image), crop.size_hw, self.inputs)
        return FlipTTA.from_options(self.options)(self.segmentor, inp, maps)

    def _changed_component(self, step: Step, crop_probs: np.ndarray, small_probs: np.ndarray | None,
                           maps: torch.Tensor) -> tuple[float, BoxF] | None:
        """Area (original pixels) and crop-local box of the connected component of (coarse mask XOR previous mask)
        under the newest click; None when the click's pixel did not change. For a crop of ``LARGE_CROP`` x the
        network input it is found at the network's resolution (the segmentor's probabilities against the previous
        mask as the network saw it) and scaled back, instead of over millions of pixels."""
        crop, click = step.crop, step.click
        assert click is not None
        x0, y0, x1, y1 = crop.box
        row, col = click.pixel
        if not (y0 <= row < y1 and x0 <= col < x1):
            return None
        layout = self.inputs.prompt_layout
        if small_probs is not None and "previous_mask" in layout:
            sy, sx = crop.size_hw[0] / (y1 - y0), crop.size_hw[1] / (x1 - x0)
            previous = maps[0, layout.index("previous_mask")].numpy() > 0.5
            r = min(int((row - y0 + 0.5) * sy), crop.size_hw[0] - 1)
            c = min(int((col - x0 + 0.5) * sx), crop.size_hw[1] - 1)
            found = _component_box((small_probs > 0.5) != previous, r, c)
            if found is None:
                return None
            area, (bx0, by0, bx1, by1) = found
            return area / (sx * sy), (bx0 / sx, by0 / sy, bx1 / sx, by1 / sy)
        return _component_box((crop_probs > 0.5) != crop.cut(step.prev_mask), row - y0, col - x0)

    def _focus_box(self, step: Step, crop_probs: np.ndarray, small_probs: np.ndarray | None,
                   maps: torch.Tensor) -> IntBox:
        """Focus box in original pixels (within the target crop): the changed component under the click
        (:meth:`_changed_component`), expanded; a fixed window around the click when there is none (or a tiny one).
        ``crop_probs``: the crop's probabilities; ``small_probs``: the same at the network's size (large crops only)."""
        x0, y0, x1, y1 = step.crop.box
        o = self.options
        assert step.click is not None
        row, col = step.click.pixel
        cw, ch = x1 - x0, y1 - y0
        found = self._changed_component(step, crop_probs, small_probs, maps)
        local = found[1] if found is not None and found[0] >= o["focus_min"] else None
        if local is None:  # no (or a tiny) changed region under the click: a fixed window around it
            local = (col - x0, row - y0, col - x0 + 1, row - y0 + 1)
            min_side = max(o["focus_min"], o["focus_fallback"] * max(cw, ch))
        else:
            min_side = o["focus_min"]
        lx0, ly0, lx1, ly1 = expand_box(local, o["focus_expand"], min_side, ch, cw)
        return integer_box((lx0 + x0, ly0 + y0, lx1 + x0, ly1 + y0), y1, x1)

    def _refine(self, features: FocalClickFeatures, maps: torch.Tensor, seg: dict[str, torch.Tensor], crop: Crop,
                focus: IntBox) -> np.ndarray:
        """Refined logits over the focus box, at original resolution (fh, fw). The image part is RoIAligned from the
        coarsest pyramid level at which the focus box is still twice the refiner's input (the image itself below
        that, and always for images without levels), so a focus box of thousands of pixels is not point-sampled."""
        o = self.options
        x0, y0, x1, y1 = crop.box
        size_hw = crop.size_hw
        fx0, fy0, fx1, fy1 = focus
        fw, fh = fx1 - fx0, fy1 - fy0
        long_side = float(np.clip(max(fw, fh), o["refiner_min"], o["refiner_max"]))
        scale = long_side / max(fw, fh)
        rh, rw = max(8, int(round(fh * scale / 2)) * 2), max(8, int(round(fw * scale / 2)) * 2)
        sx, sy = size_hw[1] / (x1 - x0), size_hw[0] / (y1 - y0)
        level = features.pyramid.level_for(focus, (rh, rw))
        g = float(2 ** level)  # level L's pixel i covers original pixels [i * 2^L, (i + 1) * 2^L)
        box_img = torch.tensor([[fx0 / g, fy0 / g, fx1 / g, fy1 / g]], dtype=torch.float32)
        box_net = torch.tensor([[(fx0 - x0) * sx, (fy0 - y0) * sy, (fx1 - x0) * sx, (fy1 - y0) * sy]])
        stride = size_hw[1] / seg["features"].shape[-1]
        ref = self.refiner(
            self.roi_align(features.refiner_source(level), box_img, (rh, rw)),
            self.roi_align(maps, box_net, (rh, rw)),
            self.roi_align(seg["logits"], box_net, (rh, rw)),
            self.roi_align(seg["features"], box_net, (max(1, rh // 2), max(1, rw // 2)), spatial_scale=1.0 / stride),
        )
        return resize(ref["logits"][0, 0].numpy(), (fh, fw))

    # ----------------------------------------------------------------- main
    def run(self, step: Step) -> EngineOutput:
        """Segmentor on the target crop, refiner on the focus crop, the crop pasted back, Progressive Merge."""
        crop = step.crop
        maps = self.prompt_maps(step)
        seg = self._segment(step.image, step.features, maps, crop)
        logits = seg["logits"][0, 0].numpy()
        small_probs = None  # the probabilities at network size: only the large-crop path uses them
        probs: np.ndarray | None = None
        if crop.scale >= LARGE_CROP:  # probabilities first, enlarged once, straight into the answer's box
            small_probs = _sigmoid(logits)
            probs, crop_probs = crop.frame(step.prev)
            cv2.resize(small_probs, (crop_probs.shape[1], crop_probs.shape[0]), dst=crop_probs,
                       interpolation=cv2.INTER_LINEAR)
        else:
            crop_probs = _sigmoid(resize(logits, crop.shape))
        focus = None
        if self.options["focus"] and step.click is not None:
            focus = self._focus_box(step, crop_probs, small_probs, maps)
            fx0, fy0, fx1, fy1 = focus
            x0, y0 = crop.box[:2]
            inside = slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)
            # only the refined pixels change
            crop_probs[inside] = _sigmoid(self._refine(step.features, maps, seg, crop, focus))
        if probs is None:
            crop_probs = crop_probs.astype(np.float32, copy=False)
            if crop.covers(*step.shape):  # the crop's own array (new at every step) is the answer
                probs = crop_probs
            else:  # the previous probabilities kept outside the crop
                probs = crop.compose(step.prev, crop_probs)
        if step.outside_box is not None:
            probs[step.outside_box] = np.minimum(probs[step.outside_box], 0.0)
        merge = ProgressiveMerge.from_options(self.options)
        merged = merge.applies(step.prompts, step.click)
        if merged:
            merge(probs, step.prev, step.prev_mask, step.click)
        return EngineOutput(probs, {"focus_crop": list(focus) if focus else None, "merged": merged})
