"""Step functions shared by the learned-model pipelines (:mod:`finecut.pipelines.skeleton` runs them): options,
torch set-up, the starting probabilities and the clicks a network sees. Network inputs (normalised images, prompt
maps in a network's channel layout, resizing) come from :mod:`finecut.model_inputs`; ``normalize``, ``resize`` and
``crop_prompt_maps`` are importable from here too."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from finecut.engines.base import Prediction
from finecut.errors import FinecutError
from finecut.model_inputs import crop_prompt_maps, normalize, resize
from finecut.prompts import Click, ClickKind, Prompts
from finecut.threads import inference_threads


def check_options(options: dict[str, Any], defaults: dict[str, Any], method: str,
                  own_checks: tuple[str, ...] = ()) -> None:
    """Raise ``TypeError`` naming every key of ``options`` that ``defaults`` does not know, and
    :class:`~finecut.errors.FinecutError` naming every value of another kind than its default's: a switch (bool
    default) must be true or false, a number a finite number (or None, which some engines read as "off"). The keys in
    ``own_checks`` take more than their default's kind, and the engine checks their values itself."""
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"unknown {method} option(s): {', '.join(sorted(unknown))}")
    for key, value in options.items():
        if key in own_checks:
            continue
        default = defaults[key]
        if isinstance(default, bool) and not isinstance(value, (bool, np.bool_)):
            raise FinecutError(f"{method} option {key}={value!r}: expected true or false")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and value is not None and (
                isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
                or not np.isfinite(value)):
            raise FinecutError(f"{method} option {key}={value!r}: expected a finite number")


def configure_torch(threads: int | None) -> None:
    """Set torch's CPU thread count (``threads``, else :func:`finecut.threads.inference_threads`: one by default) and
    flush denormals, which slow CPU convolutions several times."""
    torch.set_num_threads(inference_threads(threads))
    torch.set_flush_denormal(True)


def previous_probs(prompts: Prompts, previous: Prediction | None, shape: tuple[int, int]) -> np.ndarray:
    """The probabilities the step starts from: the previous prediction's, else the prior mask, else zeros."""
    if previous is not None:
        return previous.probs.astype(np.float32, copy=False)
    if prompts.prior_mask is not None:
        return prompts.prior_mask.astype(np.float32)
    return np.zeros(shape, np.float32)


def network_clicks(prompts: Prompts, shape: tuple[int, int]) -> tuple[Click, ...]:
    """The clicks a click-trained network sees: a box without any positive click adds one at the box's centre."""
    h, w = shape
    clicks = prompts.clicks
    if prompts.box is not None and not any(c.is_positive for c in clicks):
        b = prompts.box
        center = Click(min(w - 1, (b.x0 + b.x1) / 2), min(h - 1, (b.y0 + b.y1) / 2), ClickKind.POSITIVE)
        clicks = (center, *clicks)
    return clicks


__all__ = [
    "check_options", "configure_torch", "crop_prompt_maps", "network_clicks", "normalize", "previous_probs", "resize",
]
