"""Batches drawn ahead of the training step in a worker process.

Decoding views, augmenting them and simulating the first clicks is pure NumPy/OpenCV work that the training step
waits for. A :class:`PrefetchSampler` moves it into forked worker processes (which inherit the object bank
copy-on-write), keeps ``depth`` requests outstanding, and hands batches back through shared-memory tensors. One
worker keeps up with a CPU training step; a GPU step needs many (each draws from its own seeded stream, and batches
arrive in the order they are finished). The iterative clicks stay in the trainer: they need the network's
predictions.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Callable

import numpy as np
import torch
import torch.multiprocessing as tmp

from finecut.errors import FinecutError
from finecut.training.batch import Batch, BatchSampler

_STOP = None


def _worker(make_sampler: Callable[[np.random.Generator], BatchSampler], seed: list[int],
            requests: mp.Queue, results: mp.Queue) -> None:
    torch.set_num_threads(1)
    sampler = make_sampler(np.random.default_rng(seed))
    while True:
        request = requests.get()
        if request is _STOP:
            return
        batch_size, size = request
        try:
            results.put(sampler.sample(batch_size, size))
        except Exception as exc:  # hand the failure to the trainer instead of hanging it
            results.put(FinecutError(f"batch worker: {type(exc).__name__}: {exc}"))


class PrefetchSampler:
    """``sample(batch_size, size)`` like :class:`BatchSampler`, served by a worker ``depth`` batches ahead.

    ``size_of`` gives the crop size of the batch of each step, so a size schedule is followed exactly (with several
    workers, a batch may come a few steps early or late across a size change). Worker ``k`` of ``workers`` seeds its
    stream with ``seed + [k]`` (one worker: ``seed``, as before there were several).
    """

    def __init__(self, make_sampler: Callable[[np.random.Generator], BatchSampler], seed: list[int], depth: int,
                 batch_size: int, size_of: Callable[[int], int], first: int = 0, workers: int = 1) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        depth = max(depth, workers)  # every worker busy
        ctx = tmp.get_context("fork")
        self._requests: mp.Queue = ctx.Queue()
        self._results: mp.Queue = ctx.Queue(maxsize=depth + 1)
        self._batch_size = batch_size
        self._size_of = size_of
        self._next = first
        self._processes = [ctx.Process(target=_worker, daemon=True,
                                       args=(make_sampler, seed if workers == 1 else [*seed, k], self._requests,
                                             self._results))
                           for k in range(workers)]
        for process in self._processes:
            process.start()
        for _ in range(depth):
            self._request()

    def _request(self) -> None:
        self._requests.put((self._batch_size, self._size_of(self._next)))
        self._next += 1

    def sample(self) -> Batch:
        while True:
            try:
                batch = self._results.get(timeout=5.0)
                break
            except queue.Empty:
                dead = [p for p in self._processes if not p.is_alive()]
                if dead:
                    raise FinecutError(f"batch worker died (exit code {dead[0].exitcode})") from None
        if isinstance(batch, Exception):
            raise batch
        self._request()
        return batch

    def close(self) -> None:
        alive = [p for p in self._processes if p.is_alive()]
        for _ in alive:
            self._requests.put(_STOP)
        for process in alive:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
