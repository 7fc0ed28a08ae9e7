"""The Predictor: set an image once, then predict many times from prompts (the public contract).

:class:`Prediction` is defined beside the engine contract (:mod:`finecut.engines.base`) and importable from here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from finecut.click_honour import DEFAULT_RADIUS, honour_clicks
from finecut.engines.base import Engine, Prediction
from finecut.errors import FinecutError
from finecut.io import check_image
from finecut.prompts import Box, Click, Scribble, as_prompts, check_mask_shape


class Predictor:
    """Drives an :class:`~finecut.engines.base.Engine` on one image at a time.

    ``set_image`` computes the image features once; ``predict`` can then be called for any number of prompt sets.
    The only state kept is the image and its features: a click sequence is replayed by passing each returned
    :class:`Prediction` as ``previous`` to the next call.
    """

    def __init__(self, model: Engine, honour_clicks: bool = True, honour_radius: int = DEFAULT_RADIUS) -> None:
        """``honour_clicks``: every mask keeps positive clicks' pixels in and negative clicks' pixels out
        (:mod:`finecut.click_honour`, ``honour_radius`` pixels around each click); off gives the engine's raw mask."""
        if not isinstance(model, Engine):
            raise FinecutError(f"Predictor needs an Engine (from finecut.load_model), got {type(model).__name__}")
        self.model = model
        self.honour_clicks = bool(honour_clicks)
        self.honour_radius = int(honour_radius)
        self._image: np.ndarray | None = None
        self._features: Any = None

    @property
    def image(self) -> np.ndarray | None:
        return self._image

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the current image."""
        if self._image is None:
            raise FinecutError("no image set: call Predictor.set_image(image) first")
        return self._image.shape[0], self._image.shape[1]

    def set_image(self, image: np.ndarray) -> None:
        """Set the RGB uint8 (H, W, 3) image and compute its features once."""
        img = check_image(image)
        self._features = self.model.encode_image(img)
        self._image = img

    def reset_image(self) -> None:
        self._image = None
        self._features = None

    def predict(
        self,
        clicks: Sequence[Click] = (),
        box: Box | Sequence[float] | None = None,
        scribbles: Iterable[Scribble] = (),
        prior_mask: np.ndarray | None = None,
        previous: Prediction | None = None,
        threshold: float = 0.5,
    ) -> Prediction:
        """Segment the current image from the full prompt list so far.

        ``clicks`` is every click of this object in order; ``previous`` the :class:`Prediction` of the step before
        (None for the first step). Returns a :class:`Prediction` at original image size.
        """
        height, width = self.image_size
        prompts = as_prompts(clicks, box, scribbles, prior_mask).validate(height, width)
        if not 0.0 <= threshold <= 1.0:
            raise FinecutError(f"threshold must be in [0, 1], got {threshold}")
        if previous is not None:
            if not isinstance(previous, Prediction):
                raise FinecutError(f"previous must be a Prediction, got {type(previous).__name__}")
            check_mask_shape(previous.probs, (height, width), what="previous prediction")
        start = time.perf_counter()
        out = self.model.predict(self._image, self._features, prompts, previous)
        probs = np.asarray(out.probs, dtype=np.float32)
        check_mask_shape(probs, (height, width), what=f"{self.model.name} output")
        mask = probs > threshold if out.mask is None else np.asarray(out.mask, dtype=bool)
        alpha = None if out.alpha is None else np.asarray(out.alpha, dtype=np.float32)
        if alpha is not None:
            check_mask_shape(alpha, (height, width), what=f"{self.model.name} alpha")
        state = dict(out.state)
        if self.honour_clicks and prompts.clicks:
            mask, probs, changed = honour_clicks(mask, probs, prompts.clicks, self.honour_radius)
            if changed:
                state["honoured_pixels"] = changed
        return Prediction(
            mask=mask,
            probs=probs,
            prompts=prompts,
            threshold=threshold,
            state=state,
            seconds=time.perf_counter() - start,
            alpha=alpha,
        )


__all__ = ["Prediction", "Predictor"]
