"""Model inputs: the one owner of what a network is fed — image normalisation and prompt maps in a named layout.

**Prompt channels.** Every prompt-map stack is assembled from named channels (:data:`PROMPT_CHANNELS`):
``previous_mask`` (the previous probabilities, or the prior mask), ``positive``, ``negative`` and ``tolerant`` (binary
disks of the clicks of that kind, :func:`finecut.prompts.click_disks`; positive / negative scribbles are drawn into
the positive / negative channels at inference). A network declares the channels it takes, in order, as its
*prompt layout* (:attr:`InputSpec.prompt_layout`):

=========================================  =============================  ========================================
network (arch)                             ``prompt_channels``            prompt layout
=========================================  =============================  ========================================
FocalClick, SimpleClick, RITM layouts      N (4 finecut's, 3 official)    the first N of :data:`PROMPT_CHANNELS`
NTClick ECP (``ntclick``, ``ntclick_ecp``) 4 / 3                          all four / positive, negative, tolerant
=========================================  =============================  ========================================

The EfficientNet ECP (``ntclick_ecp_effnet``) has the ViT ECP's layouts.

A checkpoint stores its layout in its JSON (``"inputs"``, written by :func:`finecut.models.checkpoint.save_checkpoint`);
a checkpoint without the field gets the layout its network declares, which the table above derives from the arch and
``prompt_channels`` (:func:`input_spec`). Pipelines (:func:`crop_prompt_maps`) and training (:func:`batch_prompt_maps`)
encode prompts through the same channel table.

**Images.** Networks take RGB normalised by a mean and std (ImageNet's for every finecut model, :data:`IMAGENET_MEAN`,
:data:`IMAGENET_STD`). Four paths are in use, each kept bit for bit as its method was trained and evaluated (they
agree to a few float32 ulps, not exactly):

* :func:`normalize` — numpy float32 ``(x - 255 * mean) / (255 * std)`` of a uint8 image: the inference pipelines'
  per-image tensor (FocalClick's refiner input, NTClick's ECP and HRR input);
* :func:`crop_image` — a uint8 crop resized with OpenCV (:func:`resize`), *then* :func:`normalize`: FocalClick's and
  SimpleClick's segmentor input;
* :func:`crop_tensor` — a crop of the normalised tensor resized with torch (bilinear, antialiased): NTClick's ECP
  input;
* :func:`normalize_batch` — torch ``(x / 255 - mean) / std`` of a uint8 batch already resized by augmentation:
  training.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from finecut.errors import FinecutError
from finecut.prompts import CLICK_CHANNELS, Click, CropTransform, Prompts, box_map, click_disks, scribble_maps

if TYPE_CHECKING:
    import torch.nn as nn

#: The prompt channels a network can take, in the canonical stack order.
PROMPT_CHANNELS: tuple[str, ...] = ("previous_mask", "positive", "negative", "tolerant")

#: A network's prompt channels, in the order it takes them (a sub-sequence of names from :data:`PROMPT_CHANNELS`).
PromptLayout = tuple[str, ...]

#: ImageNet statistics of RGB in [0, 1]: the normalisation of every finecut network's image input.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: The normalisation the EfficientNet-Lite ImageNet weights were trained with (finecut's models feed ImageNet's).
EFFICIENTNET_LITE_MEAN: tuple[float, float, float] = (0.498, 0.498, 0.498)
EFFICIENTNET_LITE_STD: tuple[float, float, float] = (0.502, 0.502, 0.502)

_CLICK_CHANNEL = {kind.value: i for i, kind in enumerate(CLICK_CHANNELS)}  # positive 0, negative 1, tolerant 2


def check_layout(layout: Sequence[str]) -> PromptLayout:
    """``layout`` as a tuple, checked: known channel names, each at most once, at least one."""
    if isinstance(layout, (str, bytes)) or not isinstance(layout, Sequence):
        raise FinecutError(f"a prompt layout is a list of channel names, got {layout!r}")
    names = tuple(layout)
    unknown = [n for n in names if n not in PROMPT_CHANNELS]
    if unknown or not names or len(set(names)) != len(names):
        raise FinecutError(f"bad prompt layout {list(names)}: use distinct names from {list(PROMPT_CHANNELS)}")
    return names


def leading_layout(channels: int) -> PromptLayout:
    """The first ``channels`` of :data:`PROMPT_CHANNELS` (FocalClick, SimpleClick, RITM: 3 -> previous, +, -)."""
    if not 1 <= int(channels) <= len(PROMPT_CHANNELS):
        raise FinecutError(f"prompt_channels must be 1 to {len(PROMPT_CHANNELS)}, got {channels}")
    return PROMPT_CHANNELS[: int(channels)]


def trailing_layout(channels: int) -> PromptLayout:
    """The last ``channels`` of :data:`PROMPT_CHANNELS` (NTClick's ECP: 3 -> positive, negative, tolerant)."""
    if not 1 <= int(channels) <= len(PROMPT_CHANNELS):
        raise FinecutError(f"prompt_channels must be 1 to {len(PROMPT_CHANNELS)}, got {channels}")
    return PROMPT_CHANNELS[len(PROMPT_CHANNELS) - int(channels):]


@dataclass(frozen=True)
class InputSpec:
    """What a network takes: its prompt layout and the mean / std (of RGB in [0, 1]) its image is normalised by."""

    prompt_layout: PromptLayout = PROMPT_CHANNELS
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_layout", check_layout(self.prompt_layout))
        for name in ("mean", "std"):
            values = getattr(self, name)
            try:
                values = tuple(float(v) for v in values)
            except (TypeError, ValueError):
                raise FinecutError(f"input {name} must be 3 numbers, got {values!r}") from None
            if len(values) != 3 or (name == "std" and min(values) <= 0):
                raise FinecutError(f"input {name} must be 3 numbers{' > 0' if name == 'std' else ''}, got {values}")
            object.__setattr__(self, name, values)

    @property
    def prompt_channels(self) -> int:
        return len(self.prompt_layout)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint JSON's ``"inputs"`` field."""
        return {"prompt_layout": list(self.prompt_layout), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, doc: Any) -> "InputSpec":
        if not isinstance(doc, Mapping) or "prompt_layout" not in doc:
            raise FinecutError(f"checkpoint 'inputs' must be an object with a 'prompt_layout', got {doc!r}")
        unknown = sorted(set(doc) - {"prompt_layout", "mean", "std"})
        if unknown:
            raise FinecutError(f"checkpoint 'inputs' has unknown field(s) {unknown}")
        return cls(tuple(doc["prompt_layout"]), tuple(doc.get("mean", IMAGENET_MEAN)),
                   tuple(doc.get("std", IMAGENET_STD)))


def input_spec(model: "nn.Module", doc: Mapping[str, Any] | None = None) -> InputSpec:
    """The inputs of ``model``: its checkpoint's ``"inputs"`` when ``doc`` has them, else what the network declares
    (its ``input_spec``), else — a network that declares nothing — the first ``prompt_channels`` (default 4) of the
    canonical stack. A stored layout must have as many channels as the network takes."""
    declared = getattr(model, "input_spec", None)
    if not isinstance(declared, InputSpec):
        declared = InputSpec(leading_layout(int(getattr(model, "prompt_channels", len(PROMPT_CHANNELS)))))
    stored = None if doc is None else doc.get("inputs")
    if stored is None:
        return declared
    spec = InputSpec.from_json(stored)
    if spec.prompt_channels != declared.prompt_channels:
        raise FinecutError(f"checkpoint 'inputs' lists {spec.prompt_channels} prompt channels "
                           f"{list(spec.prompt_layout)}, but the network takes {declared.prompt_channels}")
    return spec


# ---------------------------------------------------------------------------------------------------------- images


@functools.lru_cache(maxsize=8)
def _pixel_stats(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    scaled = np.array(mean, dtype=np.float32) * 255, np.array(std, dtype=np.float32) * 255
    for array in scaled:
        array.setflags(write=False)
    return scaled


def normalize(image: np.ndarray, spec: InputSpec | None = None) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, H, W) float32, normalised in numpy: ``(x - 255 * mean) / (255 * std)``."""
    spec = spec or DEFAULT_INPUTS
    mean, std = _pixel_stats(spec.mean, spec.std)
    x = (image.astype(np.float32) - mean) / std
    return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()


def normalize_batch(images: np.ndarray, spec: InputSpec | None = None) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in channels-last memory, normalised in torch:
    ``(x / 255 - mean) / std`` (the training path)."""
    spec = spec or DEFAULT_INPUTS
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


#: Shrinking by at least this factor on both sides takes :func:`resize`'s two-stage path.
TWO_STAGE_SHRINK = 4


def resize(array: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an image or float map to (height, width) with OpenCV: area for shrinking, bilinear for growing.

    Shrinking by ``TWO_STAGE_SHRINK`` (4) or more on both sides (a Target Crop of a large photo) runs in two stages,
    5-6x faster on a 12-megapixel map: OpenCV's exact integer-factor area path by the largest power of two ``k`` that
    leaves at least 2x for the second stage, then area to the final size. The first stage averages the largest
    multiple-of-``k`` part of the array; the last ``< k`` rows / columns are left out and that part stretched onto
    the whole output (an offset under half an output pixel at the far edge). Smaller factors are one OpenCV call,
    as before."""
    h, w = array.shape[:2]
    th, tw = size_hw
    if (h, w) == (th, tw):
        return array
    if th < h and tw < w:
        factor = min(h / th, w / tw)
        if factor >= TWO_STAGE_SHRINK:
            k = 2 ** int(np.floor(np.log2(factor / 2)))
            array = cv2.resize(array[:h // k * k, :w // k * k], (w // k, h // k), interpolation=cv2.INTER_AREA)
        return cv2.resize(array, (tw, th), interpolation=cv2.INTER_AREA)
    return cv2.resize(array, (tw, th), interpolation=cv2.INTER_LINEAR)


def resize_tensor(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Resize an (N, C, H, W) tensor to ``size_hw`` with torch (bilinear, antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size_hw):
        return x
    return F.interpolate(x, size=size_hw, mode="bilinear", align_corners=False, antialias=True)


def crop_image(image: np.ndarray, box: tuple[int, int, int, int], size_hw: tuple[int, int],
               spec: InputSpec | None = None) -> torch.Tensor:
    """The network image of a crop ``box`` (x0, y0, x1, y1) of a uint8 image: resized (:func:`resize`), then
    normalised (:func:`normalize`)."""
    x0, y0, x1, y1 = box
    return normalize(resize(image[y0:y1, x0:x1], size_hw), spec)


def crop_tensor(full: torch.Tensor, box: tuple[int, int, int, int], size_hw: tuple[int, int]) -> torch.Tensor:
    """The network image of a crop ``box`` of an already normalised (1, 3, H, W) tensor, resized with
    :func:`resize_tensor` (normalised, then resized)."""
    x0, y0, x1, y1 = box
    return resize_tensor(full[:, :, y0:y1, x0:x1], size_hw)


# ------------------------------------------------------------------------------------------------------ prompt maps


def as_layout(layout: Sequence[str] | int) -> PromptLayout:
    """A layout, or an int ``N`` for the first N canonical channels (the older ``channels=`` arguments)."""
    if isinstance(layout, (int, np.integer)) and not isinstance(layout, bool):
        return leading_layout(int(layout))
    return check_layout(layout)  # type: ignore[arg-type]


def stack_prompt_maps(layout: Sequence[str] | int, previous: np.ndarray | None, disks: np.ndarray) -> np.ndarray:
    """(C, h, w) float32 maps in ``layout`` order from the previous mask (h, w) and the click disks (3, h, w) in
    :data:`finecut.prompts.CLICK_CHANNELS` order. ``previous`` may be None when the layout has no previous mask."""
    names = as_layout(layout)
    maps = []
    for name in names:
        if name == "previous_mask":
            if previous is None:
                raise FinecutError("the prompt layout takes the previous mask, but none was given")
            maps.append(previous)
        else:
            maps.append(disks[_CLICK_CHANNEL[name]])
    return np.stack(maps).astype(np.float32, copy=False)


def _float_view(array: np.ndarray) -> np.ndarray:
    """``array`` as float32, without a copy when it already is with unit column stride (OpenCV reads a crop view
    of a row-major map as it is)."""
    if array.dtype == np.float32 and array.strides[-1] == array.itemsize:
        return array
    return np.ascontiguousarray(array, dtype=np.float32)


def crop_prompt_maps(prompts: Prompts, clicks: tuple[Click, ...], previous: np.ndarray,
                     box: tuple[int, int, int, int], size_hw: tuple[int, int], radius: float,
                     layout: Sequence[str] | int, *, draw_box: bool = False,
                     positive_mask: np.ndarray | None = None) -> torch.Tensor:
    """(1, C, h, w) prompt maps in ``layout`` for the crop ``box`` (x0, y0, x1, y1) resized to ``size_hw``: click
    disks of ``radius`` network pixels (positive / negative scribbles drawn into the positive / negative channels)
    and the crop of ``previous`` resized with :func:`resize`.

    Two more drawings go into the positive channel, for networks that take a box or a coarse mask as a bi-map
    (FocalClick-XL's prompting layers): ``draw_box`` — the prompt box (``prompts.box``) as a filled rectangle
    (:func:`finecut.prompts.box_map`); ``positive_mask`` — a full-size (H, W) map (a coarse mask), cropped and resized
    with :func:`resize` like ``previous``. Each is max-combined with what the channel already holds."""
    names = as_layout(layout)
    x0, y0, x1, y1 = box
    transform = CropTransform(float(x0), float(y0), float(x1 - x0), float(y1 - y0), size_hw)
    disks = click_disks(clicks, transform, radius)
    if prompts.scribbles:
        strokes = scribble_maps(prompts.scribbles, transform)
        disks[0] = np.maximum(disks[0], strokes[0])
        disks[1] = np.maximum(disks[1], strokes[1])
    if draw_box and prompts.box is not None:
        disks[0] = np.maximum(disks[0], box_map(prompts.box, transform))
    if positive_mask is not None:
        mask = resize(_float_view(positive_mask[y0:y1, x0:x1]), size_hw)
        disks[0] = np.maximum(disks[0], mask)
    prev = None
    if "previous_mask" in names:
        prev = resize(_float_view(previous[y0:y1, x0:x1]), size_hw)
    return torch.from_numpy(stack_prompt_maps(names, prev, disks))[None]


def batch_prompt_maps(clicks: Sequence[Sequence[Click]], previous: torch.Tensor, radius: float,
                      layout: Sequence[str] | int,
                      memory_format: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """(B, C, H, W) prompt maps in ``layout`` at the batch's resolution: ``previous`` (B, 1, H, W) and each sample's
    click disks of ``radius`` pixels (the training path; no crop, no scribbles), drawn on ``previous``'s device
    (:func:`batch_click_disks`)."""
    names = as_layout(layout)
    b, _, h, w = previous.shape
    disk_maps = batch_click_disks(clicks, b, h, w, radius, previous.device)
    full = torch.cat([previous.float(), disk_maps], dim=1)  # the canonical stack
    index = [PROMPT_CHANNELS.index(name) for name in names]
    if index == list(range(index[0], index[0] + len(index))):  # a run of the stack (every layout in use): a view
        maps = full[:, index[0]:index[0] + len(index)]
    else:
        maps = full[:, index]
    return maps.contiguous(memory_format=memory_format)


@functools.lru_cache(maxsize=16)
def _disk_offsets(radius: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (dy, dx) integer offsets of the pixel centres within ``radius`` of a pixel centre."""
    k = int(np.ceil(radius))
    dy, dx = np.mgrid[-k:k + 1, -k:k + 1]
    inside = dy.astype(np.float64) ** 2 + dx.astype(np.float64) ** 2 <= float(radius) ** 2
    return tuple(dy[inside].tolist()), tuple(dx[inside].tolist())


def batch_click_disks(clicks: Sequence[Sequence[Click]], batch: int, height: int, width: int, radius: float,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 3, H, W) float32 click disks (channels ``CLICK_CHANNELS``) of a batch at its own resolution, rendered on
    ``device`` in one scatter — the same pixels as :func:`finecut.prompts.click_disks` with an identity transform
    (centre at the clicked pixel, pixel centres within ``radius``, disks clipped at the border), without a per-sample
    NumPy map: on a GPU the training step would otherwise wait for the CPU to draw and copy them."""
    if len(clicks) != batch:
        raise ValueError(f"{len(clicks)} click lists for a batch of {batch}")
    maps = torch.zeros(batch, len(CLICK_CHANNELS), height, width, device=device)
    rows = [(i, CLICK_CHANNELS.index(c.kind), int(np.floor(c.y)), int(np.floor(c.x)))
            for i, sample in enumerate(clicks) for c in sample]
    if not rows or radius < 0:
        return maps
    dy, dx = _disk_offsets(float(radius))
    at = torch.tensor(rows, dtype=torch.long, device=device)  # (K, 4): sample, channel, row, col
    ys = at[:, 2:3] + torch.tensor(dy, dtype=torch.long, device=device)[None]
    xs = at[:, 3:4] + torch.tensor(dx, dtype=torch.long, device=device)[None]
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    sample = at[:, 0:1].expand_as(ys)[inside]
    channel = at[:, 1:2].expand_as(ys)[inside]
    maps[sample, channel, ys[inside], xs[inside]] = 1.0
    return maps


#: The inputs of a network that declares nothing: the full stack, ImageNet normalisation.
DEFAULT_INPUTS = InputSpec()

__all__ = [
    "DEFAULT_INPUTS", "EFFICIENTNET_LITE_MEAN", "EFFICIENTNET_LITE_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "PROMPT_CHANNELS", "InputSpec", "PromptLayout", "as_layout", "batch_click_disks", "batch_prompt_maps",
    "check_layout", "crop_image", "crop_prompt_maps", "crop_tensor", "input_spec", "leading_layout", "normalize",
    "normalize_batch", "resize", "resize_tensor", "stack_prompt_maps", "trailing_layout",
]
