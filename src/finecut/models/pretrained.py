"""Loading local weight files into a network: state dicts from safetensors / torch files, and a name-and-shape
matching load with a report (pretrained backbones, official releases loaded piecemeal), and the file layout of a
finecut checkpoint (``NAME.json`` + ``NAME.safetensors``). Nothing is ever downloaded.

(Also importable from :mod:`finecut.models.backbones`, where they lived first.)
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from finecut.errors import FinecutError


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(json, safetensors) paths for a checkpoint given either file or the common stem.

    A stem keeps any dots of its own: ``runs/avg-0.3v9`` is ``runs/avg-0.3v9.json`` + ``runs/avg-0.3v9.safetensors``."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def checkpoint_name(path: str | os.PathLike) -> str:
    """A checkpoint's file name without ``.json`` / ``.safetensors``, its own dots kept (``runs/avg-0.3v9`` ->
    ``avg-0.3v9``, where ``Path.stem`` would give ``avg-0``)."""
    return checkpoint_paths(path)[0].name[: -len(".json")]


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """A finecut checkpoint's JSON config (``NAME.json`` beside ``NAME.safetensors``), checked to hold a model arch."""
    json_path, _ = checkpoint_paths(path)
    if not json_path.exists():
        raise FinecutError(f"{json_path}: checkpoint config not found (a checkpoint is NAME.json + NAME.safetensors)")
    try:
        doc = json.loads(json_path.read_text())
    except OSError as exc:
        raise FinecutError(f"{json_path}: cannot read checkpoint config ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits, nesting
        raise FinecutError(f"{json_path}: corrupt checkpoint config ({first_line(exc)})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict) or "arch" not in doc["model"]:
        raise FinecutError(f"{json_path}: not a finecut checkpoint config (needs a 'model' with an 'arch')")
    return doc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), for one-line errors."""
    text = str(exc).strip().splitlines()
    return (text[0][:300] if text else "") or type(exc).__name__


_WRAPPER_KEYS = ("state_dict", "model", "module", "net")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.safetensors`` or torch file, unwrapping ``{"state_dict": ...}``-style
    containers and a ``module.`` (DataParallel) prefix. A missing or unreadable file raises :class:`FinecutError`."""
    path = Path(path)
    if not path.is_file():
        raise FinecutError(f"{path}: weights file not found")
    obj: Any
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
            raise FinecutError(f"{path}: cannot read safetensors weights ({exc})") from exc
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Official training checkpoints also pickle their config objects; the user chose this local file.
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=False)
            except Exception as exc:  # noqa: BLE001
                raise FinecutError(f"{path}: cannot read torch weights ({exc})") from exc
        except Exception as exc:  # noqa: BLE001
            raise FinecutError(f"{path}: cannot read torch weights ({exc})") from exc
    for _ in range(3):
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise FinecutError(f"{path}: does not contain a state dict (found {type(obj).__name__})")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if not state:
        raise FinecutError(f"{path}: contains no tensors")
    return state


@dataclass
class LoadReport:
    """What :func:`load_matching` did: keys loaded, model keys left at init, checkpoint keys unused or misshaped."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors, {len(self.missing)} left at init, "
            f"{len(self.unexpected)} unused, {len(self.mismatched)} shape mismatches"
        )


def load_matching(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | os.PathLike[str] = "checkpoint",
    min_fraction: float = 0.0,
) -> LoadReport:
    """Copy every tensor of ``state`` whose name and shape match ``module``; report the rest.

    Raises :class:`FinecutError` when nothing (or less than ``min_fraction`` of the module's tensors) matched, which
    means the file holds weights of another architecture.
    """
    target = module.state_dict()
    report = LoadReport()
    matched: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
        elif tuple(target[key].shape) != tuple(value.shape):
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(target[key].shape)}")
        else:
            matched[key] = value
    report.loaded = sorted(matched)
    report.missing = sorted(k for k in target if k not in matched)
    # BatchNorm step counters are absent from old checkpoints and carry no weights: they do not count.
    weights = [k for k in target if not k.endswith("num_batches_tracked")]
    loaded = sum(1 for k in weights if k in matched)
    needed = max(1, int(min_fraction * len(weights)))
    if loaded < needed:
        raise FinecutError(
            f"{source}: only {loaded} of {len(weights)} tensors match {type(module).__name__} "
            f"({len(report.unexpected)} unknown names, {len(report.mismatched)} shape mismatches); "
            "are these weights for another architecture?"
        )
    module.load_state_dict(matched, strict=False)
    return report


def strip_prefix(state: dict[str, torch.Tensor], anchor: str) -> dict[str, torch.Tensor]:
    """Keep the keys under the prefix that precedes ``anchor`` (e.g. ``backbone.``) and remove that prefix."""
    candidates = sorted((k[: -len(anchor)] for k in state if k.endswith(anchor)), key=len)
    if not candidates:
        return state
    prefix = candidates[0]
    if not prefix:
        return state
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


__all__ = ["LoadReport", "load_matching", "read_state_dict", "strip_prefix"]
