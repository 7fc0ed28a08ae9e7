"""One registry of named engines, and ``load_model`` (the public contract) on top of it.

``load_model`` accepts a registered name (``"grabcut"``, ``"random_walker"``, ``"geodesic"``, ``"default"``, the
shipped learned models), a path to a checkpoint (``NAME.json`` + ``NAME.safetensors``), an official release file of
SimpleClick / FocalClick / RITM (``load_model("x.pth", arch="simpleclick-b")`` or ``"simpleclick-b:checkpoint=x.pth"``,
see :mod:`finecut.models.official`), and any of these as a ``NAME:KEY=VALUE,...`` spec.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finecut.engines.base import Engine
from finecut.errors import FinecutError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class EngineEntry:
    name: str
    target: str  # "module:callable" returning an Engine
    description: str

    def build(self, **kwargs: Any) -> Engine:
        module_name, attr = self.target.split(":")
        factory: Callable[..., Engine] = getattr(importlib.import_module(module_name), attr)
        return factory(**kwargs)


_ENGINES: dict[str, EngineEntry] = {}


def register_engine(name: str, target: str, description: str = "") -> None:
    """Register an engine factory by import path, so that importing finecut stays light."""
    _ENGINES[name] = EngineEntry(name, target, description)


register_engine("grabcut", "finecut.engines.grabcut:GrabCutEngine", "OpenCV GrabCut; clicks become hard seeds")
register_engine(
    "random_walker", "finecut.engines.random_walker:RandomWalkerEngine", "scikit-image random walker from click seeds"
)
register_engine(
    "geodesic", "finecut.engines.geodesic:GeodesicEngine", "geodesic-distance segmentation from click seeds"
)


#: The shipped checkpoint that ``"default"`` names (the classical GrabCut engine when it is not installed).
DEFAULT_MODEL = "focalclick-lite0-v2"


def default_model_name() -> str:
    """What ``load_model("default")`` builds: :data:`DEFAULT_MODEL` when shipped, else ``"grabcut"``."""
    return DEFAULT_MODEL if DEFAULT_MODEL in shipped_checkpoints() else "grabcut"


def shipped_checkpoints() -> dict[str, Path]:
    """Learned checkpoints shipped inside the package: name -> JSON config path."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.json")) if p.with_suffix(".safetensors").exists()}


def available_models() -> dict[str, str]:
    """Every name ``load_model`` accepts, with a one-line description."""
    names = {name: entry.description for name, entry in _ENGINES.items()}
    for name in shipped_checkpoints():
        names[name] = "learned checkpoint shipped with finecut"
    names["default"] = f"alias of {default_model_name()}"
    return dict(sorted(names.items()))


def _load_checkpoint(path: Path, **kwargs: Any) -> Engine:
    loader = importlib.import_module("finecut.models.checkpoint")
    return loader.load_engine(path, **kwargs)


#: File endings of torch checkpoints (official releases); they load through :mod:`finecut.models.official`.
TORCH_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin")


def _load_official(path: str | Path, arch: str | None, **kwargs: Any) -> Engine:
    official = importlib.import_module("finecut.models.official")
    return official.load_official_engine(str(path), arch=arch, **kwargs)


def load_model(name_or_path: str | Path = "default", *, arch: str | None = None,
               checkpoint: str | Path | None = None, **kwargs: Any) -> Engine:
    """Build an engine from a registered name, a checkpoint path (``.json``/``.safetensors``, either file), an
    official release file (``.pth`` with ``arch=`` naming or checking its architecture, e.g. ``"simpleclick-b"``;
    or an official architecture name with ``checkpoint=PATH``), or a ``NAME:KEY=VALUE,...`` spec of any of these.
    Other keyword arguments are inference options of the engine."""
    key = str(name_or_path)
    if checkpoint is not None:
        return _load_official(checkpoint, arch or key, **kwargs)
    if arch is not None:
        return _load_official(key, arch, **kwargs)
    if key in _ENGINES:
        return _ENGINES[key].build(**kwargs)
    shipped = shipped_checkpoints()
    if key in shipped:
        return _load_checkpoint(shipped[key], **kwargs)
    if key == "default":
        return load_model(default_model_name(), **kwargs)
    path = Path(key)
    if path.suffix in TORCH_SUFFIXES and path.is_file():
        return _load_official(path, None, **kwargs)
    if path.suffix in (".json", ".safetensors") or path.exists():
        if not path.exists():
            raise FinecutError(f"{path}: checkpoint not found")
        return _load_checkpoint(path, **kwargs)
    name, options = parse_model_spec(key)
    if options:
        return load_model(name, **{**options, **kwargs})
    raise FinecutError(f"unknown model {key!r}; available: {', '.join(available_models())}")


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value): JSON values (numbers, lists, strings in quotes), true/false/none in any case,
    anything else as text."""
    if "=" not in text:
        raise FinecutError(f"option {text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    words = {"true": True, "false": False, "none": None}  # Python spellings as well as JSON's
    if value.lower() in words:
        return key, words[value.lower()]
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:KEY=VALUE,KEY=VALUE...]`` -> (name, inference options), e.g. ``ntclick:negative_rule=paper``.

    Only the last ``:`` followed by ``KEY=`` starts the options, so Windows drive letters and paths keep working."""
    name, sep, rest = spec.rpartition(":")
    if not sep or "=" not in rest.split(",")[0]:
        return spec, {}
    return name, dict(parse_option(item) for item in rest.split(",") if item)
