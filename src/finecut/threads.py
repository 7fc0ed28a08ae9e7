"""How many CPU threads inference uses (torch's intra-op threads and OpenCV's thread pool).

Interactive inference (the app, ``finecut serve``, the CLI, the Python API) uses **one** thread unless told
otherwise. With torch's default of one thread per core, a click's latency collapses as soon as another process uses
the CPU: every operator splits its work over all cores and waits for the slowest worker, and a worker that lost its
core makes the whole click wait (``benchmarks/http_latency.py`` measures this: ``results/http_latency.md``). One
thread keeps a click's p95 close to its median on a busy machine, at some cost in speed on an idle many-core one.

Choose, in this order of precedence:

* ``finecut.load_model(name, threads=N)`` — for that model;
* :func:`set_inference_threads` (``finecut app --threads N``, ``finecut serve --threads N``);
* the environment variable ``FINECUT_THREADS=N`` (every entry point);
* otherwise :data:`DEFAULT_THREADS`.

``0`` means one thread per core. Both settings are per process: loading a model sets them (OpenCV's through
:func:`configure_opencv`, for classical and learned engines alike — its resizes and labelling split their rows over
its pool the same way).
"""

from __future__ import annotations

import os

import cv2

from finecut.errors import FinecutError

#: Intra-op threads for inference when nothing else is chosen.
DEFAULT_THREADS = 1
#: Environment variable read by :func:`inference_threads`.
THREADS_ENV = "FINECUT_THREADS"

_chosen: int | None = None


def _check(value: int, what: str) -> int:
    if value < 0:
        raise FinecutError(f"{what} must be >= 0 (0 = one per core), got {value}")
    return value or (os.cpu_count() or 1)


def set_inference_threads(threads: int | None) -> None:
    """Choose the threads of every model loaded from now on without its own ``threads`` (None: back to the
    environment / default)."""
    global _chosen
    _chosen = None if threads is None else _check(int(threads), "threads")


def inference_threads(requested: int | None = None) -> int:
    """The number of threads to use: ``requested``, else :func:`set_inference_threads`'s choice, else
    ``$FINECUT_THREADS``, else :data:`DEFAULT_THREADS`."""
    if requested is not None:
        return _check(int(requested), "threads")
    if _chosen is not None:
        return _chosen
    text = os.environ.get(THREADS_ENV, "").strip()
    if text:
        try:
            return _check(int(text), THREADS_ENV)
        except ValueError:
            raise FinecutError(f"{THREADS_ENV} must be a whole number of threads (0 = one per core), "
                               f"got {text!r}") from None
    return DEFAULT_THREADS


def configure_opencv(threads: int | None = None) -> None:
    """Size OpenCV's thread pool for inference (:func:`inference_threads`; results do not depend on it)."""
    cv2.setNumThreads(inference_threads(threads))
