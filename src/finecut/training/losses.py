"""Losses: normalized focal loss (RITM), its boundary-weighted variant, and BCE for the boundary head."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalized_focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                          alpha: float = 0.5, gamma: float = 2.0, eps: float = 1e-8) -> torch.Tensor:
    """RITM's NormalizedFocalLossSigmoid: focal terms renormalised so their per-image sum matches the pixel count.

    ``logits``/``target``: (B, 1, H, W); target in {0, 1}. ``weight``: optional per-pixel weight (B, 1, H, W).
    Returns the mean over the batch of per-image losses.
    """
    prob = torch.sigmoid(logits)
    positive = target > 0.5
    pt = torch.where(positive, prob, 1.0 - prob)
    a = torch.where(positive, torch.full_like(prob, alpha), torch.full_like(prob, 1.0 - alpha))
    beta = (1.0 - pt) ** gamma
    count = float(target[0].numel())
    mult = (count / (beta.sum(dim=(-2, -1), keepdim=True) + eps)).detach()
    loss = -a * beta * mult * torch.log(torch.clamp(pt, min=eps, max=1.0))
    if weight is not None:
        loss = loss * weight
    return (loss.sum(dim=(-3, -2, -1)) / count).mean()


def boundary_map(mask: torch.Tensor, width: int = 3) -> torch.Tensor:
    """Pixels within ``width`` px of the mask boundary (morphological gradient with a square kernel)."""
    k = 2 * width + 1
    dilated = F.max_pool2d(mask, k, 1, width)
    eroded = -F.max_pool2d(-mask, k, 1, width)
    return (dilated - eroded).clamp(0, 1)


def boundary_weighted_nfl(logits: torch.Tensor, target: torch.Tensor, boundary_weight: float = 1.5,
                          width: int = 3) -> torch.Tensor:
    weight = 1.0 + (boundary_weight - 1.0) * boundary_map(target, width)
    return normalized_focal_loss(logits, target, weight)


def boundary_bce(boundary_logits: torch.Tensor, target: torch.Tensor, width: int = 3) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(boundary_logits, boundary_map(target, width))
