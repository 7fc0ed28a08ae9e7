"""RoIAlign written with torch ops (``grid_sample``), matching torchvision's ``roi_align(aligned=True)`` sampling.

Boxes are ``(x0, y0, x1, y1)`` in the input map's pixel-edge coordinates (a box covering pixels 0..W-1 is
``(0, 0, W, H)``). Each output cell is the bilinear sample at its centre (``sampling_ratio=1``); with a box that spans
an integer number of input pixels per output pixel this equals area-free resampling, which is what the refiner needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = 2) -> torch.Tensor:
    """Crop-and-resize ``features`` (B, C, H, W) to ``boxes`` (B, 4) -> (B, C, oh, ow).

    Box ``b`` samples from ``features[b]``. ``spatial_scale`` maps box coordinates to feature coordinates
    (e.g. 1/4 for a stride-4 map with boxes in input pixels). ``sampling_ratio`` sub-samples per output cell
    (averaged), as torchvision does.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"boxes must be (B, 4) with B = {features.shape[0]}, got {tuple(boxes.shape)}")
    b, _, h, w = features.shape
    oh, ow = output_size
    s = max(1, int(sampling_ratio))
    boxes = boxes.to(features.dtype) * spatial_scale
    x0, y0, x1, y1 = boxes.unbind(1)
    # sample positions (pixel-edge coords) inside each box: s x s per output cell
    ty = (torch.arange(oh * s, device=features.device, dtype=features.dtype) + 0.5) / (oh * s)
    tx = (torch.arange(ow * s, device=features.device, dtype=features.dtype) + 0.5) / (ow * s)
    ys = y0[:, None] + ty[None, :] * (y1 - y0)[:, None]  # (B, oh*s)
    xs = x0[:, None] + tx[None, :] * (x1 - x0)[:, None]
    # to grid_sample's normalized coords with align_corners=False: -1..1 spans pixel edges 0..W
    gy = ys / h * 2 - 1
    gx = xs / w * 2 - 1
    grid = torch.stack(
        (gx[:, None, :].expand(b, oh * s, ow * s), gy[:, :, None].expand(b, oh * s, ow * s)), dim=-1
    )
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if s > 1:
        out = F.avg_pool2d(out, s)
    return out
