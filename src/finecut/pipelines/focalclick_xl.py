"""FocalClick-XL inference: Context-Net once per image, Object-Net on the target crop with the interaction form's
prompting layer, Detail-Net on low-confidence patches (progressive magnification), Progressive Merge.

Per image: :meth:`FocalClickXLEngine.encode_image` resizes the whole image so its long side is the context encoder's
``input_size`` (:func:`~finecut.models.focalclick_xl.context_input_geometry`), normalises it, zero-pads it (SAM: to a
square; after normalising, as SAM does) and runs :meth:`~finecut.models.focalclick_xl.FocalClickXLNet.encode_context`
once; the features and the geometry are cached (:class:`XLFeatures`).

Per interaction (the shared steps — starting probabilities, target crop, state — are
:class:`~finecut.pipelines.skeleton.CropPipeline`'s):

1. **Routing** (:func:`interaction_forms`): which prompting layer(s) see this step. Scribbles -> ``scribbles``; a box
   that is new in this step (none or another one in ``previous``) -> ``box`` (then ``clicks`` in the same call when
   clicks came with it); an unchanged box -> ``clicks`` for the corrections that follow it; clicks -> ``clicks``;
   a prior mask alone -> ``coarse_mask``. A prior mask *with* clicks is mask correction: ``clicks`` with the prior as
   the previous mask, and Progressive Merge.
2. **Object-Net** on the target crop (:class:`~finecut.pipelines.transforms.ZoomIn`: the previous mask, the box and
   the new click, expanded 1.4; the whole image when nothing is segmented yet; later scribbles widen it to hold them),
   resized to ``object_size`` squared (256), with the prompt maps [previous mask, positive, negative] of the form
   (:func:`form_prompt_maps`) and the cached context features RoIAligned to the crop -> the primitive probabilities,
   resized back to the crop at original resolution and pasted over the previous probabilities.
3. **Detail-Net** (progressive magnification), on the steps of the forms the ``detail`` option names
   (:func:`detail_forms`; a step's form is its last routed one, so a new box with clicks counts as clicks): the crop's
   low-confidence pixels (``trimap_low`` < p < ``trimap_high``, and within ``trimap_band`` Detail-Net pixels of the
   primitive's 0.5 boundary: farther ones are decided by the primitive, since the Detail-Net is trained to refine a
   boundary band) weighted by their uncertainty ``1 - |2p - 1|``; up to ``max_patches`` windows chosen greedily, each
   the one holding the most uncertainty not yet covered (:func:`select_patches`; windows may overlap). A window is
   ``detail_size`` network pixels seen at ``detail_zoom`` times the Object-Net's scale, capped at the original
   resolution (``max_detail_scale`` 1). The batch of patches with the trimap of the primitive probabilities and the
   clicks / scribbles (:func:`~finecut.models.detail_net.trimap_from_probs`) -> alpha, composed with the trimap
   (:func:`~finecut.models.detail_net.compose_alpha`), averaged where windows overlap, written back inside the crop.
4. A prompt box clamps what lies outside it to 0; **Progressive Merge**
   (:class:`~finecut.pipelines.transforms.ProgressiveMerge`) for clicks with a prior mask and after ``merge_after``
   clicks from scratch; scribbles on a prior mask keep only the changed components their newest strokes touch.

Output: ``probs`` — the primitive probabilities outside the detail patches, the composed alpha inside; ``alpha`` (on a
step the Detail-Net refines; ``None`` on the others, since then there is no matte) — the composed alpha inside the
detail patches and the binary mask elsewhere (:func:`matte`; ``alpha > 0.5`` is the mask). With ``detail_feedback`` off,
``probs`` are the primitive probabilities everywhere (box clamp and merge applied), the Detail-Net refines that result,
and the mask is the refined one (``alpha > 0.5``): the next interaction starts from ``probs``, so the Object-Net's loop
is the one it runs without the Detail-Net and a Detail-Net mistake is never fed back into its previous-mask input.

Every network call goes through the engine's :attr:`~FocalClickXLEngine.networks` — ``context_net``, ``object_net``
(the interaction form a string argument) and ``detail_net`` (:class:`XLContextNetwork`, :class:`XLObjectNetwork`,
:class:`XLDetailNetwork`: tensors in, a dict of named tensors out) — so a runtime can put its own callables in their
place (``runtime=onnx``: :func:`finecut.onnx.runtime.attach`, one Object-Net graph per form; docs/onnx.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from finecut.engines.base import EngineOutput, Prediction
from finecut.errors import FinecutError
from finecut.model_inputs import crop_image, crop_prompt_maps, normalize, resize
from finecut.models.detail_net import compose_alpha, trimap_from_probs, trimap_one_hot
from finecut.models.focalclick_xl import ContextGeometry, context_input_geometry
from finecut.models.fusion import inference_copy
from finecut.pipelines.geometry import BoxF, components_touching, intersect_box, mask_iou, net_size, union_box
from finecut.pipelines.skeleton import CropPipeline, Step
from finecut.pipelines.transforms import Crop, IntBox, ProgressiveMerge, ZoomIn
from finecut.prompts import Box, Click, CropTransform, Prompts, Scribble, scribble_maps

DEFAULTS: dict[str, Any] = {
    "object_size": 256,  # the Object-Net's input side (the network's stored setting wins over this default)
    "detail_size": 64,  # the Detail-Net's patch side in network pixels (likewise)
    "square_input": True,  # the target crop resized to object_size squared (False: long side, aspect kept)
    "zoom_in": True,
    "expand": 1.4,
    "min_crop": 48,
    "click_radius": 5.0,  # click disks, Object-Net pixels
    # the interaction forms the Detail-Net refines (:func:`detail_forms`): True every form, False none (the primitive
    # probabilities are the result), or some of them, e.g. ["scribbles", "box"] (a model spec: detail=scribbles+box)
    "detail": True,
    # False: the Detail-Net refines what the user gets (mask, alpha) but ``probs`` stay the primitive's, and the next
    # interaction starts from them, so a Detail-Net mistake is not fed back into the Object-Net's next pass
    "detail_feedback": True,
    "detail_zoom": 2.0,  # detail patches at this many times the Object-Net's scale ...
    "max_detail_scale": 1.0,  # ... but never finer than this (1: the original resolution)
    "max_patches": 16,
    "detail_min_mass": 4.0,  # a window holding less uncertainty (in pixels of uncertainty 1) is not refined
    "trimap_low": 0.1,  # primitive p <= low: background; >= high: foreground; between: low confidence
    "trimap_high": 0.9,
    "detail_click_radius": 3.0,  # clicks as sure foreground / background in the trimap, Detail-Net pixels
    "trimap_band": 6,  # only low-confidence pixels this close to the primitive's boundary are unknown (Detail-Net px)
    "progressive_merge": True,
    "merge_after": 10,
    # an object's first click or scribble runs twice, the second pass on the Target Crop of the first one's mask
    "zoom_first_pass": False,
    "box_refine": 0,  # after a box-only pass, this many coarse-mask passes on its own result (0: none)
    "flip_tta": False,  # every Object-Net call averaged with its call on the mirrored patch, prompts and context
    # which passes of a box step flip TTA doubles (with flip_tta on): True every pass (the box pass and each box_refine
    # pass), "first" only the box pass, "last" only the last pass (the one the user gets), False none
    "box_flip_tta": True,
    # the box_refine passes stop early once a pass changes the mask by little: its mask's IoU with the mask it
    # corrected at least this (None: every pass runs)
    "box_refine_stop": None,
    # the networks run as an inference copy (:func:`finecut.models.fusion.inference_copy`: BatchNorm folded into the
    # convolutions, weights channels-last): the same results up to float32 rounding, about a quarter less time a step
    # on CPU. Only for a network whose weights no longer change (a loaded model), never one still in training
    "fuse_batchnorm": False,
}

#: The interaction forms the pipeline routes to, in the network's prompting-layer names.
ROUTED_FORMS: tuple[str, ...] = ("clicks", "scribbles", "box", "coarse_mask")


@dataclass(frozen=True)
class XLFeatures:
    """What :meth:`FocalClickXLEngine.encode_image` caches per image: the Context-Net's features (1, C, h, w) and
    where the image went in its input."""

    context: torch.Tensor
    geometry: ContextGeometry


def _whole_number(value: object, minimum: int) -> bool:
    """An int (not a bool) of at least ``minimum``: the check of the options that count passes or pixels."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def detail_forms(value: object) -> frozenset[str]:
    """The interaction forms whose steps the Detail-Net refines, from the ``detail`` option: ``True`` every form,
    ``False`` none, or some of :data:`ROUTED_FORMS` as a list or as one string joined by ``+`` (``"scribbles+box"``,
    the spelling a ``NAME:detail=...`` model spec allows, since a spec separates its options by commas)."""
    if isinstance(value, (bool, np.bool_)):
        return frozenset(ROUTED_FORMS) if value else frozenset()
    names = value.split("+") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(name, str) for name in names):
        raise FinecutError(f"FocalClick-XL detail must be true, false or a list of interaction forms "
                           f"({', '.join(ROUTED_FORMS)}), got {value!r}")
    unknown = [name for name in names if name not in ROUTED_FORMS]
    if unknown:
        raise FinecutError(f"FocalClick-XL detail: unknown interaction form {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(ROUTED_FORMS)} (e.g. detail=scribbles+box)")
    return frozenset(names)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


# ------------------------------------------------------------------------------------------------------- routing


def interaction_forms(prompts: Prompts, previous: Prediction | None) -> tuple[str, ...]:
    """The prompting layers one step runs, in order (two passes when a new box comes with clicks).

    * any scribble -> ``("scribbles",)`` (clicks given with them are drawn as dots into the same bi-map);
    * a box new in this step (``previous`` is None or had another box) -> ``("box",)``, or ``("box", "clicks")``
      when clicks came with it: the box form segments from the rectangle, the clicks form corrects that result;
    * an unchanged box with clicks -> ``("clicks",)``: the clicks after a box are corrections (the box form is
      trained on the rectangle alone); an unchanged box alone -> ``("box",)`` again;
    * clicks -> ``("clicks",)`` (with a prior mask: mask correction, the prior as the previous mask);
    * a prior mask alone -> ``("coarse_mask",)``.
    """
    if prompts.scribbles:
        return ("scribbles",)
    if prompts.box is not None:
        new_box = previous is None or previous.prompts.box != prompts.box
        if not prompts.clicks:
            return ("box",)
        return ("box", "clicks") if new_box else ("clicks",)
    if prompts.clicks:
        return ("clicks",)
    if prompts.prior_mask is not None:
        return ("coarse_mask",)
    raise FinecutError("FocalClick-XL needs a click, a box, a scribble or a prior mask")


def form_prompt_maps(form: str, prompts: Prompts, previous: np.ndarray, crop: Crop, radius: float,
                     layout: tuple[str, ...]) -> torch.Tensor:
    """(1, C, h, w) prompt maps of ``crop`` for an interaction ``form`` in ``layout`` (the previous mask and the
    bi-map): ``clicks`` — click disks of ``radius`` network pixels; ``scribbles`` — the strokes and the click disks;
    ``box`` — the box as a filled rectangle in the positive channel; ``coarse_mask`` — the prior mask in the positive
    channel, the negative one empty. The previous-mask channel always holds ``previous`` (the step's starting
    probabilities: the prior mask itself on a first step from a prior mask)."""
    if form == "clicks":
        return crop_prompt_maps(Prompts(clicks=prompts.clicks), prompts.clicks, previous, crop.box, crop.size_hw,
                                radius, layout)
    if form == "scribbles":
        drawn = Prompts(clicks=prompts.clicks, scribbles=prompts.scribbles)
        return crop_prompt_maps(drawn, prompts.clicks, previous, crop.box, crop.size_hw, radius, layout)
    if form == "box":
        if prompts.box is None:
            raise FinecutError("the box form needs a box")
        return crop_prompt_maps(Prompts(box=prompts.box), (), previous, crop.box, crop.size_hw, radius, layout,
                                draw_box=True)
    if form == "coarse_mask":
        if prompts.prior_mask is None:
            raise FinecutError("the coarse_mask form needs a prior mask")
        return crop_prompt_maps(Prompts(), (), previous, crop.box, crop.size_hw, radius, layout,
                                positive_mask=prompts.prior_mask)
    raise FinecutError(f"unknown interaction form {form!r}; known: {', '.join(ROUTED_FORMS)}")


# ------------------------------------------------------------------------------------------------ detail patches


def select_patches(weight: np.ndarray, patch_hw: tuple[int, int], max_patches: int,
                   min_mass: float = 1.0) -> list[IntBox]:
    """Greedy windows over a (h, w) weight map (the uncertainty of low-confidence pixels): each time the
    ``patch_hw`` window holding the most weight not yet covered, until ``max_patches`` or until the best window holds
    less than ``min_mass``. Windows may overlap; each lies inside the map where the map is large enough (else it
    starts at 0 and runs past the map's end). Boxes are (x0, y0, x1, y1) in the map's pixels.

    Works on a grid of ``f`` x ``f`` cells (``f`` = the patch's short side / 32, at least 1), so the cost does not grow
    with the patch size."""
    h, w = weight.shape
    ph, pw = int(patch_hw[0]), int(patch_hw[1])
    if max_patches <= 0 or h == 0 or w == 0 or ph < 1 or pw < 1:
        return []
    f = max(1, min(ph, pw) // 32)
    gh, gw = math.ceil(h / f), math.ceil(w / f)
    u = np.ascontiguousarray(weight, dtype=np.float32)
    if f > 1:  # cell sums (pad to whole cells, then sum each f x f block)
        padded = np.zeros((gh * f, gw * f), np.float32)
        padded[:h, :w] = u
        u = padded.reshape(gh, f, gw, f).sum(axis=(1, 3))
    else:
        u = u.copy()
    kh, kw = max(1, round(ph / f)), max(1, round(pw / f))
    boxes: list[IntBox] = []
    for _ in range(int(max_patches)):
        score = cv2.boxFilter(u, -1, (kw, kh), normalize=False, borderType=cv2.BORDER_CONSTANT)
        best = int(np.argmax(score))
        cy, cx = divmod(best, gw)
        if score[cy, cx] < min_mass:
            break
        # the window in map pixels: centred on the best cell's centre, kept inside the map when it fits
        y0 = round((cy + 0.5) * f - ph / 2)
        x0 = round((cx + 0.5) * f - pw / 2)
        y0 = min(max(y0, 0), max(h - ph, 0))
        x0 = min(max(x0, 0), max(w - pw, 0))
        boxes.append((x0, y0, x0 + pw, y0 + ph))
        # the weight it covers is spent (cells overlapping the window)
        u[y0 // f: math.ceil((y0 + ph) / f), x0 // f: math.ceil((x0 + pw) / f)] = 0.0
    return boxes


def place_window(start: int, side: int, lo: int, hi: int, limit: int) -> int:
    """Where a window of ``side`` pixels chosen at ``start`` inside the range [lo, hi) goes in [0, limit): inside the
    range when it fits, else over the whole range (centred), always inside [0, limit)."""
    if hi - lo >= side:
        start = min(max(start, lo), hi - side)
    else:
        start = lo - (side - (hi - lo)) // 2
    return min(max(start, 0), max(limit - side, 0))


def _scribbles_box(scribbles: tuple[Scribble, ...]) -> BoxF:
    xs = [x for s in scribbles for x, _ in s.points]
    ys = [y for s in scribbles for _, y in s.points]
    r = max(s.width for s in scribbles) / 2 + 1
    return min(xs) - r, min(ys) - r, max(xs) + r, max(ys) + r


# ------------------------------------------------------------------------------------------------------ networks


class _XLCall(nn.Module):
    """One of the engine's network calls on a :class:`~finecut.models.focalclick_xl.FocalClickXLNet`: the net's
    sub-networks it runs are registered here (for ``state_dict`` and the ONNX digest: each weight in exactly one
    call), the net itself is only referenced, and its method is looked up at each call (so whatever the net's
    instance does — a test double's wrapper included — is what runs)."""

    def __init__(self, net: nn.Module, parts: tuple[str, ...]) -> None:
        super().__init__()
        for part in parts:
            self.add_module(part, getattr(net, part))
        object.__setattr__(self, "net", net)  # not a child: its weights are the parts above and the other calls'

    def export_config(self) -> dict[str, Any]:
        """What a driver of the exported graph needs to know of this network (``model.json``'s ``networks``)."""
        return {}


class XLContextNetwork(_XLCall):
    """``context_net(image) -> {"features"}``: the Context-Net on the whole normalised, padded image
    (:meth:`~finecut.models.focalclick_xl.FocalClickXLNet.encode_context`)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net, ("context",))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.net.encode_context(image)}

    def export_config(self) -> dict[str, Any]:
        encoder = self.net.context
        return {"type": type(encoder).__name__, "input_size": int(encoder.input_size),
                "pad_square": bool(getattr(encoder, "pad_square", False)), "pad_multiple": 16,
                "stride": int(encoder.stride), "out_channels": int(encoder.out_channels)}


class XLObjectNetwork(_XLCall):
    """``object_net(image, prompt_maps, form, context, boxes) -> {"logits", ...}``: the Object-Net with the
    prompting layer of ``form`` (:meth:`~finecut.models.focalclick_xl.FocalClickXLNet.forward_object`)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net, ("object", "prompting"))

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(self.net.forms)

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor, form: str, context: torch.Tensor,
                boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net.forward_object(image, prompt_maps, form, context, boxes)

    def export_config(self) -> dict[str, Any]:
        return {"forms": list(self.forms), "context_stride": int(self.net.context_stride)}


class XLDetailNetwork(_XLCall):
    """``detail_net(image, trimap) -> {"alpha", ...}``: the Detail-Net on a batch of patches
    (:meth:`~finecut.models.focalclick_xl.FocalClickXLNet.forward_detail`)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net, ("detail",))

    @property
    def trimap_channels(self) -> int:
        return int(getattr(self.net.detail, "trimap_channels", 3))

    @property
    def primitive_input(self) -> bool:
        """Whether the ``trimap`` input ends with the primitive probabilities (one more channel)."""
        return bool(getattr(self.net.detail, "primitive_input", False))

    @property
    def input_channels(self) -> int:
        return self.trimap_channels + int(self.primitive_input)

    def forward(self, image: torch.Tensor, trimap: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net.forward_detail(image, trimap)

    def export_config(self) -> dict[str, Any]:
        return {"trimap_channels": self.trimap_channels, "primitive_input": self.primitive_input}


# -------------------------------------------------------------------------------------------------------- engine


class FocalClickXLEngine(CropPipeline):
    """A :class:`~finecut.models.focalclick_xl.FocalClickXLNet` behind the Engine interface: context features per
    image, the Object-Net with the routed prompting layer, Detail-Net patches, Progressive Merge (module docstring).
    """

    name = "focalclick_xl"
    method = "FocalClick-XL"
    defaults = DEFAULTS
    config_keys = ("zoom_in", "detail")
    own_checks = ("detail", "box_flip_tta")  # detail: :func:`detail_forms` (in :meth:`setup`); box_flip_tta: true,
    # false, "first" or "last" (in :meth:`check`)
    networks = ("context_net", "object_net", "detail_net")
    features_type: ClassVar[type | None] = XLFeatures

    # ----------------------------------------------------------------- hooks
    def check(self, net: nn.Module, options: Mapping[str, Any]) -> None:
        needed = ("encode_context", "forward_object", "forward_detail", "context", "forms")
        if not all(hasattr(net, attr) for attr in needed):
            raise FinecutError(f"the focalclick_xl engine needs a FocalClick-XL network (context, object and "
                               f"detail nets), got {type(net).__name__}")
        o = {**DEFAULTS, **options}
        if not 0.0 <= o["trimap_low"] < o["trimap_high"] <= 1.0:
            raise FinecutError(f"FocalClick-XL trimap thresholds need 0 <= low < high <= 1, got "
                               f"{o['trimap_low']}, {o['trimap_high']}")
        if not o["detail_zoom"] > 0 or not o["max_detail_scale"] > 0:
            raise FinecutError("FocalClick-XL detail_zoom and max_detail_scale must be > 0")
        if int(o["max_patches"]) < 0:
            raise FinecutError(f"FocalClick-XL max_patches must be >= 0, got {o['max_patches']}")
        refine = o["box_refine"]
        if not _whole_number(refine, 0):
            raise FinecutError(f"FocalClick-XL box_refine must be a whole number of passes >= 0, got {refine!r}")
        if refine and "coarse_mask" not in getattr(net, "forms", ()):
            raise FinecutError("FocalClick-XL box_refine needs the coarse_mask prompting layer, which this model "
                               "does not have")
        stop = o["box_refine_stop"]
        if stop is not None and (isinstance(stop, bool) or not isinstance(stop, (int, float)) or not 0 < stop <= 1):
            raise FinecutError(f"FocalClick-XL box_refine_stop must be an IoU in (0, 1] or None, got {stop!r}")
        which = o["box_flip_tta"]
        if not (isinstance(which, (bool, np.bool_)) or which in ("first", "last")):
            raise FinecutError(f"FocalClick-XL box_flip_tta must be true, false, \"first\" or \"last\", got {which!r}")
        band = o["trimap_band"]
        if band is not None and not _whole_number(band, 1):
            raise FinecutError(f"FocalClick-XL trimap_band must be a whole number of pixels >= 1 (or None), got {band!r}")

    def setup(self, net: nn.Module) -> None:
        self.forms = tuple(net.forms)
        #: The forms whose steps the Detail-Net refines, parsed (and checked) once from the merged ``detail`` option.
        self.refined_forms = detail_forms(self.options["detail"])
        source = inference_copy(net) if self.options["fuse_batchnorm"] else net
        self.context_net: Any = XLContextNetwork(source)
        self.object_net: Any = XLObjectNetwork(source)
        self.detail_net: Any = XLDetailNetwork(source)

    def network_clicks(self, prompts: Prompts, shape: tuple[int, int]) -> tuple[Click, ...]:
        """The user's clicks only: a box is its own prompt (a rectangle), not a centre click."""
        return prompts.clicks

    def has_prompts(self, prompts: Prompts, clicks: tuple[Click, ...]) -> bool:
        """Clicks, scribbles, a box and a prior mask alone each give the network something to act on."""
        return bool(clicks or prompts.scribbles or prompts.box is not None or prompts.prior_mask is not None)

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """The Object-Net's input for a crop: ``object_size`` squared (``square_input``), else long side
        ``object_size`` with the aspect kept (multiples of 16)."""
        size = int(self.options["object_size"])
        if self.options["square_input"]:
            return size, size
        return net_size(width, height, size)

    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> XLFeatures:
        """The Context-Net's features of the whole image (run once per image): resized so the long side is the
        encoder's ``input_size``, normalised, zero-padded at the bottom / right (SAM: to a square)."""
        h, w = image.shape[:2]
        encoder = self.net.context
        geometry = context_input_geometry(h, w, int(encoder.input_size), bool(getattr(encoder, "pad_square", False)))
        x = normalize(resize(image, geometry.resized), self.inputs)
        pad_h, pad_w = geometry.padded[0] - geometry.resized[0], geometry.padded[1] - geometry.resized[1]
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return XLFeatures(self.context_net(x)["features"], geometry)

    # ----------------------------------------------------------------- steps
    def target_crop(self, step: Step, mask: np.ndarray) -> Crop:
        """The Object-Net's crop from ``mask`` (the previous mask of this pass): the skeleton's zoom-in, widened to
        hold the scribbles once something is segmented (a first scribble sees the whole image, like a first click)."""
        prompts = step.prompts
        if prompts.scribbles and mask.any():
            held = union_box(prompts.box.as_tuple() if prompts.box is not None else None,
                             _scribbles_box(prompts.scribbles))
            prompts = replace(prompts, box=Box(*held))  # type: ignore[misc]
        return ZoomIn.from_options(self.options).crop(mask, prompts, step.click, self.input_size)

    def primitive(self, step: Step, crop: Crop, form: str, previous: np.ndarray, flip: bool | None = None
                  ) -> np.ndarray:
        """The Object-Net's probabilities over ``crop`` (its shape, original resolution) for ``form``, starting from
        ``previous`` (full-size probabilities); averaged with the mirrored call when ``flip`` (None: ``flip_tta``)."""
        features: XLFeatures = step.features
        image = crop_image(step.image, crop.box, crop.size_hw, self.inputs)
        maps = form_prompt_maps(form, step.prompts, previous, crop, self.options["click_radius"],
                                self.inputs.prompt_layout)
        boxes = torch.tensor([features.geometry.map_box(crop.box)], dtype=torch.float32)
        logits = self.object_net(image, maps, form, features.context, boxes)["logits"]
        if self.options["flip_tta"] if flip is None else flip:
            logits = (logits + self.mirrored_object_logits(image, maps, form, features.context, boxes)) / 2
        return _sigmoid(resize(logits[0, 0].float().numpy(), crop.shape))

    def mirrored_object_logits(self, image: torch.Tensor, maps: torch.Tensor, form: str, context: torch.Tensor,
                               boxes: torch.Tensor) -> torch.Tensor:
        """Flip TTA's second Object-Net call, flipped back: the patch and its prompt maps mirrored, and the context
        as the mirrored feature map with the RoI box mirrored about its width (``context_stride`` x map width,
        context-input pixels), so the RoIAligned context is exactly the plain call's, mirrored. The Context-Net
        is not run again (its features of a mirrored image would cost a second ``set_image``)."""
        axis = float(context.shape[-1] * int(self.net.context_stride))
        mirrored = torch.stack([axis - boxes[:, 2], boxes[:, 1], axis - boxes[:, 0], boxes[:, 3]], dim=1)
        out = self.object_net(image.flip(-1), maps.flip(-1), form, context.flip(-1), mirrored)
        return out["logits"].flip(-1)

    def box_pass_flips(self) -> list[bool]:
        """Whether flip TTA doubles each pass of a box step (the box pass, then each ``box_refine`` pass): every pass
        with ``flip_tta``, unless ``box_flip_tta`` keeps it to the box pass (``"first"``), to the last pass
        (``"last"``) or to none (False)."""
        passes = 1 + int(self.options["box_refine"])
        which = self.options["box_flip_tta"]
        if not self.options["flip_tta"] or not which:
            return [False] * passes
        keep = {"first": 0, "last": passes - 1}.get(which) if isinstance(which, str) else None
        return [keep is None or index == keep for index in range(passes)]

    def refine_box_result(self, step: Step, probs: np.ndarray, crop: Crop, flips: list[bool]
                          ) -> tuple[np.ndarray, Crop]:
        """The ``box_refine`` coarse-mask passes on a box pass's result (clamped to the box), each with flip TTA as
        ``flips`` says: the coarse-mask layer corrects a mask, the box layer only has the rectangle to go on. With
        ``box_refine_stop``, the passes end after one whose mask has at least that IoU with the mask it corrected.
        Returns the probabilities and the last crop."""
        stop = self.options["box_refine_stop"]
        mask = self.box_pass_mask(step, probs)
        for flip in flips:
            if not mask.any():
                break
            pass_step = replace(step, prompts=replace(step.prompts, prior_mask=mask))
            crop = self.target_crop(pass_step, mask)
            probs = crop.paste(probs.copy(), self.primitive(pass_step, crop, "coarse_mask", probs, flip))
            previous, mask = mask, self.box_pass_mask(step, probs)
            if stop is not None and mask_iou(previous, mask) >= stop:
                break
        return probs, crop

    @staticmethod
    def box_pass_mask(step: Step, probs: np.ndarray) -> np.ndarray:
        """A box pass's mask, clamped to the box: what the next coarse-mask pass corrects."""
        mask = probs > 0.5
        if step.outside_box is not None:
            mask &= ~step.outside_box
        return mask

    def detail_windows(self, crop: Crop, probs: np.ndarray, shape: tuple[int, int]
                       ) -> tuple[list[IntBox], tuple[int, int]]:
        """The detail patches (image boxes) over the crop's low-confidence pixels, and the Detail-Net input size."""
        o = self.options
        h, w = shape
        cut = crop.cut(probs)
        low, high = float(o["trimap_low"]), float(o["trimap_high"])
        ch, cw = crop.shape
        object_scale = max(crop.size_hw) / max(ch, cw)  # Object-Net pixels per original pixel (long side)
        scale = min(float(o["max_detail_scale"]), float(o["detail_zoom"]) * object_scale)
        uncertain = (cut > low) & (cut < high)
        if o["trimap_band"] is not None:  # the band the trimap leaves unknown, in original pixels
            band = max(1, round(float(o["trimap_band"]) / scale))
            kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
            mask = (cut > 0.5).astype(np.uint8)
            uncertain &= (cv2.dilate(mask, kernel) > 0) & (cv2.dilate(1 - mask, kernel) > 0)
        weight = np.where(uncertain, 1.0 - np.abs(2.0 * cut - 1.0), 0.0).astype(np.float32)
        if not weight.any():
            return [], (0, 0)
        side = round(int(o["detail_size"]) / scale)
        ph, pw = min(side, h), min(side, w)
        size_hw = max(8, round(ph * scale)), max(8, round(pw * scale))
        x0, y0, x1, y1 = crop.box
        boxes = []
        for bx0, by0, _, _ in select_patches(weight, (ph, pw), int(o["max_patches"]), float(o["detail_min_mass"])):
            ix0 = place_window(bx0 + x0, pw, x0, x1, w)
            iy0 = place_window(by0 + y0, ph, y0, y1, h)
            boxes.append((ix0, iy0, ix0 + pw, iy0 + ph))
        return boxes, size_hw

    def refine(self, step: Step, crop: Crop, probs: np.ndarray) -> list[IntBox]:
        """Detail-Net on the crop's low-confidence patches, in place on ``probs`` (inside the crop); returns the
        patches."""
        o = self.options
        boxes, size_hw = self.detail_windows(crop, probs, step.shape)
        if not boxes:
            return []
        low, high = float(o["trimap_low"]), float(o["trimap_high"])
        drawn = Prompts(clicks=step.prompts.clicks, scribbles=step.prompts.scribbles)
        images, primitive, marks = [], [], []
        for box in boxes:
            bx0, by0, bx1, by1 = box
            images.append(normalize(resize(step.image[by0:by1, bx0:bx1], size_hw), self.inputs))
            primitive.append(resize(np.ascontiguousarray(probs[by0:by1, bx0:bx1]), size_hw))
            marks.append(crop_prompt_maps(drawn, drawn.clicks, probs, box, size_hw, o["detail_click_radius"],
                                          ("positive", "negative")))
        image = torch.cat(images)
        prob = torch.from_numpy(np.stack(primitive))[:, None]
        mark = torch.cat(marks)
        band = None if o["trimap_band"] is None else int(o["trimap_band"])
        one_hot = trimap_from_probs(prob, mark[:, 0:1], mark[:, 1:2], low, high, band=band)
        channels = int(getattr(self.net.detail, "trimap_channels", 3))  # the torch module's, on any runtime
        trimap = one_hot if channels == 3 else trimap_from_probs(prob, mark[:, 0:1], mark[:, 1:2], low, high, 1,
                                                                 band=band)
        inputs = torch.cat([trimap, prob], dim=1) if getattr(self.net.detail, "primitive_input", False) else trimap
        alpha = self.detail_net(image, inputs)["alpha"]
        composed = compose_alpha(alpha.float(), one_hot if channels == 3 else trimap_one_hot(trimap))
        composed_np = composed[:, 0].numpy()
        # average overlapping patches, inside the crop only
        x0, y0 = crop.box[:2]
        total = np.zeros(crop.shape, np.float32)
        count = np.zeros(crop.shape, np.float32)
        for (bx0, by0, bx1, by1), patch in zip(boxes, composed_np):
            inside = intersect_box((bx0, by0, bx1, by1), crop.box)
            if inside is None:
                continue
            full = resize(patch, (by1 - by0, bx1 - bx0))
            cx0, cy0, cx1, cy1 = inside
            total[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] += full[cy0 - by0:cy1 - by0, cx0 - bx0:cx1 - bx0]
            count[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] += 1.0
        cut = crop.cut(probs)
        covered = count > 0
        cut[covered] = total[covered] / count[covered]
        return boxes

    def merge(self, step: Step, form: str, probs: np.ndarray, base: np.ndarray) -> bool:
        """Progressive Merge in place against ``base`` (this pass's starting probabilities): clicks with a prior
        mask or after ``merge_after`` clicks (only the changed component under the newest click); scribbles on a
        prior mask (only the changed components the newest strokes touch)."""
        merge = ProgressiveMerge.from_options(self.options)
        prompts = step.prompts
        if form == "clicks" and merge.applies(prompts, step.click):
            merge(probs, base, base > 0.5, step.click)  # type: ignore[arg-type]
            return True
        if form == "scribbles" and merge.enabled and prompts.prior_mask is not None:
            before = step.previous.prompts.scribbles if step.previous is not None else ()
            newest = prompts.scribbles[len(before):] if prompts.scribbles[:len(before)] == before else ()
            strokes = scribble_maps(newest or prompts.scribbles, CropTransform.identity(*step.shape)).any(axis=0)
            changed = components_touching((probs > 0.5) != (base > 0.5), strokes)
            probs[~changed] = base[~changed]
            return True
        return False

    def run(self, step: Step) -> EngineOutput:
        """Route, Object-Net on the target crop (one pass per routed form), Detail-Net patches, box clamp, merge."""
        forms = interaction_forms(step.prompts, step.previous)
        missing = [form for form in forms if form not in self.forms]
        if missing:
            raise FinecutError(f"this FocalClick-XL model has no prompting layer for {', '.join(missing)} "
                               f"(it has {', '.join(self.forms)})")
        base = step.prev
        probs = base
        crop = step.crop
        box_flips = self.box_pass_flips() if forms == ("box",) else None  # a box-only step: per pass
        for index, form in enumerate(forms):
            if index:  # the clicks after a new box start from the box pass's result
                base = probs
            if index or step.prompts.scribbles:
                crop = self.target_crop(step, base > 0.5)
            flip = box_flips[0] if box_flips else None
            probs = crop.paste(base.copy(), self.primitive(step, crop, form, base, flip))
        if box_flips:
            probs, crop = self.refine_box_result(step, probs, crop, box_flips[1:])
        detail = forms[-1] in self.refined_forms  # a new box with clicks: the clicks decide
        feedback = detail and bool(self.options["detail_feedback"])
        patches = self.refine(step, crop, probs) if feedback else []  # refined probabilities carried to the next step
        if step.outside_box is not None:
            probs[step.outside_box] = 0.0
        merged = self.merge(step, forms[-1], probs, base)
        probs = np.clip(probs, 0.0, 1.0).astype(np.float32, copy=False)
        refined = probs
        if detail and not feedback:  # the Detail-Net on this step's result; the next step starts from ``probs``
            refined = probs.copy()
            patches = self.refine(step, crop, refined)
            if step.outside_box is not None:
                refined[step.outside_box] = 0.0
            refined = np.clip(refined, 0.0, 1.0).astype(np.float32, copy=False)
        state = {"target_crop": list(crop.box), "forms": list(forms),
                 "detail_patches": [list(b) for b in patches], "merged": merged}
        alpha = matte(refined, crop.box, patches) if detail else None
        mask = None if refined is probs else refined > 0.5
        return EngineOutput(probs, state, mask=mask, alpha=alpha)


def matte(probs: np.ndarray, crop_box: IntBox, patches: list[IntBox]) -> np.ndarray:
    """The alpha matte of a step: the Detail-Net's composed alpha inside its patches (clipped to the target crop, where
    it was written), the binary mask everywhere else — the primitive's probabilities are a confidence, not a
    coverage, so outside the patches the matte is the mask (``matte > 0.5`` is still the mask)."""
    alpha = (probs > 0.5).astype(np.float32)
    for patch in patches:
        inside = intersect_box(patch, crop_box)
        if inside is not None:
            x0, y0, x1, y1 = inside
            alpha[y0:y1, x0:x1] = probs[y0:y1, x0:x1]
    return alpha


__all__ = [
    "DEFAULTS", "ROUTED_FORMS", "FocalClickXLEngine", "XLContextNetwork", "XLDetailNetwork", "XLFeatures",
    "XLObjectNetwork", "detail_forms", "form_prompt_maps", "interaction_forms", "matte", "place_window",
    "select_patches",
]
