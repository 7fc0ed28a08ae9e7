"""Inference threads (issue 12.8): interactive inference uses one intra-op thread unless told otherwise.

With torch's default (one thread per core) a click's latency collapses when another process uses the CPU (OpenMP
workers wait for each other); with one thread it stays steady. ``benchmarks/http_latency.py`` measures both, quiet
and with a CPU-bound process beside it.
"""

import os

import pytest
import torch

import finecut
from finecut.commands import app as app_command
from finecut.threads import THREADS_ENV, inference_threads, set_inference_threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    yield
    set_inference_threads(None)
    torch.set_num_threads(before)


def test_learned_model_uses_one_thread_by_default():
    torch.set_num_threads(max(2, os.cpu_count() or 2))
    finecut.load_model("default")
    assert torch.get_num_threads() == 1


def test_threads_are_configurable(monkeypatch):
    finecut.load_model("default", threads=2)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv(THREADS_ENV, "3")
    assert inference_threads() == 3
    finecut.load_model("default")
    assert torch.get_num_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "0")  # 0: one per core (torch's own default)
    assert inference_threads() == (os.cpu_count() or 1)
    set_inference_threads(2)  # what `finecut app --threads 2` does: wins over the environment
    assert inference_threads() == 2
    monkeypatch.setenv(THREADS_ENV, "many")
    set_inference_threads(None)
    with pytest.raises(finecut.FinecutError, match=THREADS_ENV):
        inference_threads()


def test_app_and_serve_take_a_threads_option():
    import argparse

    from finecut.commands import serve as serve_command

    for command in (app_command, serve_command):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        args = parser.parse_args((["images"] if command is app_command else []) + ["--threads", "2"])
        assert args.threads == 2
