"""Alpha-matte metrics (SAD, MSE, gradient error) as pure functions, and the reader of an alpha evaluation set.

The metrics follow the matting literature (Rhemann et al. 2009; Deep Image Matting's evaluation): alphas in [0, 1];
``SAD`` = sum of absolute differences / 1000; ``MSE`` = mean squared difference; ``Grad`` = sum of the squared
differences of the gradient magnitudes / 1000, the gradients taken with first-order Gaussian derivative filters
(sigma 1.4, kernel half-size ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma 0.01))), L2-normalised; borders replicated).
All three are summed / averaged over ``region`` (default: the whole image; a matting trimap's unknown band when one is
given), so with no trimap the numbers are over the whole image and are not those of a trimap benchmark.

**Alpha set layout** (:class:`AlphaFolder`): ``ROOT/images/<stem>.{png,jpg,...}`` and ``ROOT/alphas/<stem>.png``
(grey, uint8 0-255 or uint16 0-65535; a colour file's first channel is used). Each pair is one sample: the image, the
binary ground truth ``alpha >= 0.5`` that drives the simulated user, and the alpha itself in ``meta["alpha"]``
(float32 in [0, 1]). An optional ``ROOT/trimaps/<stem>.png`` (128 = unknown) limits the metrics to its unknown band.
``benchmarks/make_alpha_set.py`` writes a seeded synthetic set in this layout (composites on held-out training photos).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from finecut.errors import FinecutError
from finecut.io import IMAGE_SUFFIXES, read_image
from finecut.prompts import check_mask_shape

GRADIENT_SIGMA = 1.4


def as_alpha(value: np.ndarray, what: str = "alpha") -> np.ndarray:
    """An alpha map as float64 in [0, 1]: bool as 0/1, uint8 / uint16 scaled by 255 / 65535, floats as they are."""
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise FinecutError(f"{what} must be 2-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    out = arr.astype(np.float64)
    if not np.isfinite(out).all() or out.min(initial=0.0) < 0.0 or out.max(initial=0.0) > 1.0:
        raise FinecutError(f"{what} must hold values in [0, 1]")
    return out


def _pair(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = as_alpha(gt, "ground-truth alpha")
    p = as_alpha(pred, "predicted alpha")
    check_mask_shape(p, g.shape, what="predicted alpha")
    if region is None:
        r = np.ones(g.shape, dtype=bool)
    else:
        r = np.asarray(region, dtype=bool)
        check_mask_shape(r, g.shape, what="metric region")
    return p, g, r


def sad(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> float:
    """Sum of absolute alpha differences over ``region``, / 1000."""
    p, g, r = _pair(pred, gt, region)
    return float(np.abs(p - g)[r].sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> float:
    """Mean squared alpha difference over ``region`` (0 for an empty region)."""
    p, g, r = _pair(pred, gt, region)
    n = int(r.sum())
    return float(((p - g) ** 2)[r].sum() / n) if n else 0.0


def gaussian_derivative_kernel(sigma: float = GRADIENT_SIGMA, epsilon: float = 1e-2) -> np.ndarray:
    """The x-derivative filter of the gradient error: ``k[i, j] = g(i - h) * g'(j - h)``, L2-normalised."""
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * epsilon))))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(u**2) / (2.0 * sigma**2)) / (sigma * np.sqrt(2.0 * np.pi))
    dg = -u * g / sigma**2
    kernel = np.outer(g, dg)
    return kernel / np.sqrt((kernel**2).sum())


def gradient_magnitude(alpha: np.ndarray, sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    kx = gaussian_derivative_kernel(sigma)
    a = as_alpha(alpha)
    gx = ndi.convolve(a, kx, mode="nearest")
    gy = ndi.convolve(a, kx.T, mode="nearest")
    return np.hypot(gx, gy)


def gradient_error(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None,
                   sigma: float = GRADIENT_SIGMA) -> float:
    """Sum over ``region`` of the squared difference of the Gaussian-gradient magnitudes, / 1000."""
    p, g, r = _pair(pred, gt, region)
    diff = (gradient_magnitude(p, sigma) - gradient_magnitude(g, sigma)) ** 2
    return float(diff[r].sum() / 1000.0)


def alpha_errors(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> dict[str, float]:
    """``{"sad", "mse", "grad"}`` of a predicted alpha (or a binary mask) against the ground-truth alpha."""
    return {"sad": sad(pred, gt, region), "mse": mse(pred, gt, region), "grad": gradient_error(pred, gt, region)}


def read_alpha(path: str | os.PathLike) -> np.ndarray:
    """An alpha file as float32 in [0, 1] (uint8 / uint16 grey; a colour file's first channel)."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise FinecutError(f"{path}: cannot read alpha image")
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype not in (np.uint8, np.uint16):
        raise FinecutError(f"{path}: alpha must be an 8- or 16-bit grey image, got {arr.dtype}")
    return as_alpha(arr, str(path)).astype(np.float32)


class AlphaFolder:
    """An alpha evaluation set (``images/`` + ``alphas/`` [+ ``trimaps/``], see the module doc), as a dataset of
    samples for the evaluator."""

    def __init__(self, root: str | os.PathLike, name: str | None = None) -> None:
        self.root = Path(root)
        images = self.root / "images"
        alphas = self.root / "alphas"
        for folder in (images, alphas):
            if not folder.is_dir():
                raise FinecutError(f"{self.root}: an alpha set needs images/ and alphas/ folders ({folder} missing)")
        self.name = name or self.root.name
        by_stem = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        self.pairs: list[tuple[str, Path, Path]] = []
        for path in sorted(alphas.iterdir()):
            if path.suffix.lower() == ".png" and path.stem in by_stem:
                self.pairs.append((path.stem, by_stem[path.stem], path))
        if not self.pairs:
            raise FinecutError(f"{self.root}: no image / alpha pairs with matching names")
        trimaps = self.root / "trimaps"
        self.trimaps = trimaps if trimaps.is_dir() else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        from finecut.datasets.base import Sample

        stem, image_path, alpha_path = self.pairs[index]
        image = read_image(image_path)
        alpha = read_alpha(alpha_path)
        if alpha.shape != image.shape[:2]:
            raise FinecutError(f"{alpha_path}: alpha is {alpha.shape[1]}x{alpha.shape[0]}, image {image_path} is "
                               f"{image.shape[1]}x{image.shape[0]}")
        meta: dict[str, Any] = {"image_path": str(image_path), "alpha_path": str(alpha_path), "alpha": alpha}
        if self.trimaps is not None and (self.trimaps / f"{stem}.png").is_file():
            trimap = cv2.imread(str(self.trimaps / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
            if trimap is not None and trimap.shape == alpha.shape:
                meta["alpha_region"] = trimap == 128
        gt = (alpha >= 0.5).astype(np.int8)
        return Sample(stem, image, gt, meta=meta)

    def __repr__(self) -> str:
        return f"AlphaFolder({str(self.root)!r})"
