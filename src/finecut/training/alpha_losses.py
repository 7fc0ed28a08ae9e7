"""Losses for alpha mattes (FocalClick-XL's Detail-Net): L1, MSE, gradient and composition losses, pure functions.

Every function takes predicted and target alpha ``(B, 1, H, W)`` in [0, 1] and an optional ``weight`` of the same
shape (or broadcastable), e.g. the unknown region of the trimap: a weighted loss is ``sum(w * err) / sum(w)`` (0 when
the weight is empty), an unweighted one the plain mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def _reduce(err: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return err.mean()
    w = weight.to(err.dtype).expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1e-6)


def alpha_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute alpha error."""
    return _reduce((pred - target).abs(), weight)


def alpha_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared alpha error (the paper's Detail-Net loss)."""
    return _reduce((pred - target).square(), weight)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives (x, y) of ``(B, C, H, W)`` maps, normalised so a unit step gives 0.5 at the edge pixels,
    with replicated borders (a constant map has zero gradient everywhere)."""
    kx = _SOBEL_X.to(device=x.device, dtype=x.dtype)
    c = x.shape[1]
    weight_x = kx.expand(c, 1, 3, 3)
    weight_y = kx.t().expand(c, 1, 3, 3)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, weight_x, groups=c), F.conv2d(padded, weight_y, groups=c)


def alpha_gradient_loss(pred: torch.Tensor, target: torch.Tensor,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 distance between the Sobel gradients of predicted and target alpha (sharp strands and edges)."""
    pgx, pgy = image_gradients(pred)
    tgx, tgy = image_gradients(target)
    return _reduce((pgx - tgx).abs() + (pgy - tgy).abs(), weight)


def alpha_composition_loss(pred: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor,
                           image: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 distance between ``image`` and the composite ``pred * foreground + (1 - pred) * background``
    (``(B, 3, H, W)`` colours in one scale; synthetic composites know their foreground and background exactly)."""
    composite = pred * foreground + (1.0 - pred) * background
    err = (composite - image).abs().mean(1, keepdim=True)
    return _reduce(err, weight)


def alpha_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, l1: float = 1.0,
               mse: float = 0.0, gradient: float = 1.0) -> dict[str, torch.Tensor]:
    """The Detail-Net's loss: ``l1 * L1 + mse * MSE + gradient * gradient loss`` (terms with weight 0 skipped).
    Returns the terms and their sum under ``"loss"``."""
    terms: dict[str, torch.Tensor] = {}
    if l1:
        terms["alpha_l1"] = alpha_l1(pred, target, weight)
    if mse:
        terms["alpha_mse"] = alpha_mse(pred, target, weight)
    if gradient:
        terms["alpha_grad"] = alpha_gradient_loss(pred, target, weight)
    factors = {"alpha_l1": l1, "alpha_mse": mse, "alpha_grad": gradient}
    total = sum((factors[k] * v for k, v in terms.items()), pred.new_zeros(()))
    return {**terms, "loss": total}


__all__ = ["alpha_composition_loss", "alpha_gradient_loss", "alpha_l1", "alpha_loss", "alpha_mse", "image_gradients"]
