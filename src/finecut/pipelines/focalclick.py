"""FocalClick inference: Target Crop -> Segmentor, Focus Crop -> Refiner, Progressive Merge.

Per click:
1. **Target Crop**: the box of the previous mask and the new click, expanded by ``expand`` (1.4), resized so its long side
   is ``target_size`` (aspect kept; ``square_input`` resizes it to ``target_size`` squared, as the official code).
   The first click of an object (empty previous mask) sees the whole image.
2. **Segmentor** on the crop with the prompt maps [previous mask, positive, negative, tolerant].
3. **Focus Crop**: the connected component of (coarse mask XOR previous mask) that holds the new click, its box expanded
   by ``focus_expand`` (1.4); when that component is missing or tiny, a fixed window around the click.
   The **Refiner** sees the original-resolution pixels of the focus crop plus RoIAligned segmentor maps, logits and
   features; its output replaces the coarse prediction inside the focus box.
4. **Progressive Merge** (with a prior mask, and after ``merge_after`` clicks from scratch): only the component of
   (new mask XOR previous mask) under the new click changes the mask.
Outside the target crop the previous probabilities are kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from finecut.engines.base import Engine, EngineOutput, Prediction
from finecut.model_inputs import crop_image, crop_prompt_maps, input_spec, normalize, resize
from finecut.models.roi_align import roi_align
from finecut.pipelines.common import check_options, configure_torch, network_clicks, previous_probs, target_box
from finecut.pipelines.geometry import (
    component_at, expand_box, integer_box, mask_box, net_size,
)
from finecut.prompts import Click, Prompts

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
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


class FocalClickEngine(Engine):
    """A trained :class:`~finecut.models.focalclick.FocalClickNet` behind the Engine interface."""

    def __init__(self, net: nn.Module, name: str = "focalclick", checkpoint: dict[str, Any] | None = None,
                 threads: int | None = None, **options: Any) -> None:
        check_options(options, DEFAULTS, "FocalClick")
        self.net = net.eval()
        self.name = name
        self.options = {**DEFAULTS, **getattr(net, "pipeline", {}), **options}
        self.checkpoint = checkpoint or {}
        #: Prompt layout and image normalisation (the checkpoint's "inputs", else what the network declares).
        self.inputs = input_spec(net, self.checkpoint)
        # a plain interactive net (e.g. SimpleClick) is its own segmentor and has no refiner
        self.segmentor = getattr(net, "segmentor", net)
        self.refiner = getattr(net, "refiner", None)
        if self.refiner is None:
            self.options["focus"] = False
        configure_torch(threads)

    def config(self) -> dict[str, Any]:
        training = self.checkpoint.get("training", {})
        return {
            "name": self.name,
            "model": self.checkpoint.get("model", {}),
            "pipeline": dict(self.options),
            "zoom_in": self.options["zoom_in"],
            "flip_tta": self.options["flip_tta"],
            "trained_steps": training.get("step"),
        }

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """The normalised full image: the refiner's input (its focus crops are RoIAligned from it)."""
        return normalize(image, self.inputs)

    # ----------------------------------------------------------------- helpers
    def _target_box(self, prev_mask: np.ndarray, prompts: Prompts, click: Click | None) -> tuple[int, int, int, int]:
        o = self.options
        return target_box(prev_mask, prompts, click, o["zoom_in"], o["expand"], o["min_crop"])

    def _segment(self, image: np.ndarray, maps: torch.Tensor, crop: tuple[int, int, int, int],
                 size_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        # the segmentor sees the uint8 crop resized with OpenCV, then normalised (not a crop of the cached tensor)
        inp = crop_image(image, crop, size_hw, self.inputs)
        out = self.segmentor(inp, maps)
        if self.options["flip_tta"]:
            flipped = self.segmentor(inp.flip(-1), maps.flip(-1))
            out = {k: (v + flipped[k].flip(-1)) / 2 for k, v in out.items()}
        return out

    def _focus_box(self, coarse: np.ndarray, prev: np.ndarray, click: Click,
                   crop: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Focus box in original pixels (within the target crop)."""
        x0, y0, x1, y1 = crop
        o = self.options
        row, col = click.pixel
        cw, ch = x1 - x0, y1 - y0
        diff = (coarse > 0.5) != (prev > 0.5)
        inside = y0 <= row < y1 and x0 <= col < x1
        comp = component_at(diff, row - y0, col - x0) if inside else None
        local = mask_box(comp) if comp is not None and comp.sum() >= o["focus_min"] else None
        if local is None:  # no (or a tiny) changed region under the click: a fixed window around it
            local = (col - x0, row - y0, col - x0 + 1, row - y0 + 1)
            min_side = max(o["focus_min"], o["focus_fallback"] * max(cw, ch))
        else:
            min_side = o["focus_min"]
        lx0, ly0, lx1, ly1 = expand_box(local, o["focus_expand"], min_side, ch, cw)
        return integer_box((lx0 + x0, ly0 + y0, lx1 + x0, ly1 + y0), y1, x1)

    def _refine(self, features: torch.Tensor, maps: torch.Tensor, seg: dict[str, torch.Tensor],
                crop: tuple[int, int, int, int], size_hw: tuple[int, int],
                focus: tuple[int, int, int, int]) -> np.ndarray:
        """Refined logits over the focus box, at original resolution (fh, fw)."""
        o = self.options
        x0, y0, x1, y1 = crop
        fx0, fy0, fx1, fy1 = focus
        fw, fh = fx1 - fx0, fy1 - fy0
        long_side = float(np.clip(max(fw, fh), o["refiner_min"], o["refiner_max"]))
        scale = long_side / max(fw, fh)
        rh, rw = max(8, int(round(fh * scale / 2)) * 2), max(8, int(round(fw * scale / 2)) * 2)
        sx, sy = size_hw[1] / (x1 - x0), size_hw[0] / (y1 - y0)
        box_img = torch.tensor([[fx0, fy0, fx1, fy1]], dtype=torch.float32)
        box_net = torch.tensor([[(fx0 - x0) * sx, (fy0 - y0) * sy, (fx1 - x0) * sx, (fy1 - y0) * sy]])
        stride = size_hw[1] / seg["features"].shape[-1]
        ref = self.refiner(
            roi_align(features, box_img, (rh, rw)),
            roi_align(maps, box_net, (rh, rw)),
            roi_align(seg["logits"], box_net, (rh, rw)),
            roi_align(seg["features"], box_net, (max(1, rh // 2), max(1, rw // 2)), spatial_scale=1.0 / stride),
        )
        return resize(ref["logits"][0, 0].numpy(), (fh, fw))

    # ----------------------------------------------------------------- main
    @torch.inference_mode()
    def predict(self, image: np.ndarray, features: torch.Tensor, prompts: Prompts,
                previous: Prediction | None) -> EngineOutput:
        h, w = image.shape[:2]
        o = self.options
        prev = previous_probs(prompts, previous, (h, w))
        clicks = network_clicks(prompts, (h, w))
        if not clicks and not prompts.scribbles:
            return EngineOutput(prev.copy(), {"num_clicks": 0})
        click = prompts.clicks[-1] if prompts.clicks else None
        prev_mask = prev > 0.5
        crop = self._target_box(prev_mask, prompts, click)
        x0, y0, x1, y1 = crop
        if o["square_input"]:
            size_hw = (int(o["target_size"]), int(o["target_size"]))
        else:
            size_hw = net_size(x1 - x0, y1 - y0, o["target_size"])
        maps = crop_prompt_maps(prompts, clicks, prev, crop, size_hw, o["click_radius"], self.inputs.prompt_layout)
        seg = self._segment(image, maps, crop, size_hw)
        crop_logits = resize(seg["logits"][0, 0].numpy(), (y1 - y0, x1 - x0))
        crop_prev = prev[y0:y1, x0:x1]
        if o["focus"] and click is not None:
            focus = self._focus_box(_sigmoid(crop_logits), crop_prev, click, crop)
            fx0, fy0, fx1, fy1 = focus
            refined = self._refine(features, maps, seg, crop, size_hw, focus)
            crop_logits[fy0 - y0: fy1 - y0, fx0 - x0: fx1 - x0] = refined
        else:
            focus = None
        crop_probs = _sigmoid(crop_logits).astype(np.float32)
        probs = prev.copy()
        probs[y0:y1, x0:x1] = crop_probs
        if prompts.box is not None:
            outside = np.ones((h, w), bool)
            bx0, by0, bx1, by1 = integer_box(prompts.box.as_tuple(), h, w)
            outside[by0:by1, bx0:bx1] = False
            probs[outside] = np.minimum(probs[outside], 0.0)
        merged = False
        if (o["progressive_merge"] and click is not None
                and (prompts.prior_mask is not None or len(prompts.clicks) > o["merge_after"])):
            diff = (probs > 0.5) != prev_mask
            comp = component_at(diff, *click.pixel)
            keep = np.ones((h, w), bool) if comp is None else ~comp
            probs[keep] = prev[keep]
            merged = True
        state = {"num_clicks": len(prompts.clicks), "target_crop": list(crop),
                 "focus_crop": list(focus) if focus else None, "merged": merged}
        return EngineOutput(probs, state)
