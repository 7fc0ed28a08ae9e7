"""The loader: one registry of engines (classical and learned alike), and ``load_model`` (the public contract).

``load_model`` accepts a registered name (``"grabcut"``, ``"random_walker"``, ``"geodesic"``, ``"default"``, the
shipped learned models), a path to a checkpoint (``NAME.json`` + ``NAME.safetensors``), an official release file of
SimpleClick / FocalClick / RITM (``load_model("x.pth", arch="simpleclick-b")`` or ``"simpleclick-b:checkpoint=x.pth"``,
see :mod:`finecut.models.official`), and any of these as a ``NAME:KEY=VALUE,...`` spec.

The loading path runs top-down: a checkpoint's network is built by :mod:`finecut.models.checkpoint` (networks only),
then :func:`build_engine` wraps it in the engine its JSON names (``"engine"``), looked up in :data:`ENGINES` — the
same registry that holds the classical engines. Entries are lazy ``"module:attribute"`` paths, so ``import finecut``
stays light. A learned entry (``learned=True``) is built as ``factory(network, name=, checkpoint=, **options)`` and may
carry default ``options``; a classical one as ``factory(**options)``, and only classical entries are names that
``load_model`` accepts by themselves.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from finecut.engines.base import Engine
from finecut.errors import FinecutError
from finecut.threads import configure_opencv
from finecut.registration import Entry, Registry

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Every engine by name: classical engines (built from options) and the learned engines checkpoints name.
ENGINES = Registry("engine")
_ENGINES = ENGINES  # the older private name
#: An engine entry: ``EngineEntry(name, "module:callable", description)``.
EngineEntry = Entry


def register_engine(name: str, target: str, description: str = "", **info: Any) -> None:
    """Register an engine factory by import path, so that importing finecut stays light (``learned=True`` for an
    engine built around a checkpoint's network)."""
    ENGINES.add(name, target, description, **info)


register_engine("grabcut", "finecut.engines.grabcut:GrabCutEngine", "OpenCV GrabCut; clicks become hard seeds")
register_engine(
    "random_walker", "finecut.engines.random_walker:RandomWalkerEngine", "scikit-image random walker from click seeds"
)
register_engine(
    "geodesic", "finecut.engines.geodesic:GeodesicEngine", "geodesic-distance segmentation from click seeds"
)
register_engine("focalclick", "finecut.pipelines.focalclick:FocalClickEngine",
                "FocalClick: Target Crop, segmentor, Focus Crop + refiner, Progressive Merge", learned=True)
# SimpleClick / RITM: zoom-in on a single network, no refiner, no progressive merge
register_engine("simpleclick", "finecut.pipelines.focalclick:FocalClickEngine", "SimpleClick: zoom-in on one network",
                learned=True, options={"progressive_merge": False})
register_engine("ritm", "finecut.pipelines.focalclick:FocalClickEngine", "RITM: zoom-in on one network",
                learned=True, options={"progressive_merge": False})
register_engine("ntclick", "finecut.pipelines.ntclick:NTClickEngine",
                "NTClick: ECP (FBU map) then HRR on the uncertain band", learned=True)
register_engine("focalclick_xl", "finecut.pipelines.focalclick_xl:FocalClickXLEngine",
                "FocalClick-XL: context features once, Object-Net per interaction form, Detail-Net alpha patches",
                learned=True, arches=("focalclick_xl",))


def _is_learned(entry: Entry) -> bool:
    return bool(entry.info.get("learned", False))


def engine_for_arch(doc: dict[str, Any]) -> str:
    """The engine of a checkpoint that names none: the learned entry listing the model's arch in its ``arches``
    (``focalclick_xl`` -> ``focalclick_xl``), else ``"focalclick"``."""
    model = doc.get("model")
    arch = model.get("arch") if isinstance(model, dict) else None
    for name, entry in ENGINES.items():
        if arch is not None and arch in entry.info.get("arches", ()):
            return name
    return "focalclick"


def build_engine(model: Any, doc: dict[str, Any], **kwargs: Any) -> Engine:
    """Wrap a loaded network in the inference engine named by its checkpoint (``doc["engine"]``, default
    :func:`engine_for_arch`); options: the entry's defaults, then the checkpoint's ``"pipeline"``, then ``kwargs``."""
    kind = doc.get("engine", engine_for_arch(doc))
    entry = ENGINES.get(kind) if isinstance(kind, str) else None
    if entry is None or not _is_learned(entry):
        raise FinecutError(f"checkpoint names an unknown engine {kind!r}")
    runtime, onnx_dir = kwargs.pop("runtime", "torch"), kwargs.pop("onnx_dir", None)
    options = {**entry.info.get("options", {}), **doc.get("pipeline", {}), **kwargs}
    return with_runtime(entry.build(model, name=doc.get("name", kind), checkpoint=doc, **options), runtime, onnx_dir)


#: What the ``runtime`` option of a learned model accepts: its networks on PyTorch (the default) or ONNX Runtime.
RUNTIMES = ("torch", "onnx")


def with_runtime(engine: Engine, runtime: Any = "torch", onnx_dir: Any = None) -> Engine:
    """``engine`` with its networks on ``runtime``: ``"torch"`` leaves it as built; ``"onnx"`` runs the same pipeline
    on ONNX Runtime (:func:`finecut.onnx.use_onnx`; graphs from ``onnx_dir``, else exported once into a cache)."""
    if runtime not in RUNTIMES:
        raise FinecutError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        if onnx_dir is not None:
            raise FinecutError("onnx_dir goes with runtime=onnx")
        return engine
    return importlib.import_module("finecut.onnx").use_onnx(engine, onnx_dir)


#: The shipped checkpoint that ``"default"`` names (the classical GrabCut engine when it is not installed).
DEFAULT_MODEL = "focalclick-lite0-whole8"


#: Shipped names whose weights are not trained yet: ``load_model(name)`` says so (instead of "unknown model") until
#: ``weights/NAME.json`` + ``weights/NAME.safetensors`` exist.
PENDING_CHECKPOINTS: dict[str, str] = {}


def default_model_name() -> str:
    """What ``load_model("default")`` builds: :data:`DEFAULT_MODEL` when shipped, else ``"grabcut"``."""
    return DEFAULT_MODEL if DEFAULT_MODEL in shipped_checkpoints() else "grabcut"


def _checkpoints_in(folder: Path) -> dict[str, Path]:
    """The checkpoints (``NAME.json`` + ``NAME.safetensors``) directly in ``folder``: name -> JSON config path."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.json")) if p.with_suffix(".safetensors").exists()}


def shipped_checkpoints() -> dict[str, Path]:
    """Learned checkpoints shipped inside the package: name -> JSON config path."""
    return _checkpoints_in(WEIGHTS_DIR)


def pretrained_checkpoints() -> dict[str, Path]:
    """Pretraining checkpoints shipped for training (``weights/pretrained/NAME.json`` + ``.safetensors``, e.g. an MAE
    encoder): name -> JSON config path. They start training runs (``init_checkpoint``, ``init_backbone_checkpoint``)
    and are not models ``load_model`` opens."""
    return _checkpoints_in(WEIGHTS_DIR / "pretrained")


def available_models() -> dict[str, str]:
    """Every name ``load_model`` accepts, with a one-line description."""
    names = {name: entry.description for name, entry in ENGINES.items() if not _is_learned(entry)}
    for name in shipped_checkpoints():
        names[name] = "learned checkpoint shipped with finecut"
    names["default"] = f"alias of {default_model_name()}"
    return dict(sorted(names.items()))


def load_checkpoint_engine(path: str | Path, **kwargs: Any) -> Engine:
    """Load a finecut checkpoint and wrap its network in the engine its JSON names (``"engine"``, ``"pipeline"``);
    ``kwargs`` are inference options."""
    checkpoint = importlib.import_module("finecut.models.checkpoint")
    model, doc = checkpoint.load_checkpoint(path)
    json_path = checkpoint.checkpoint_paths(path)[0]
    if not isinstance(doc.get("pipeline", {}), dict) or not isinstance(doc.get("engine", "focalclick"), str):
        raise FinecutError(f"{json_path}: 'pipeline' must be an object and 'engine' a name")
    try:
        return build_engine(model, doc, **kwargs)
    except FinecutError as exc:
        raise FinecutError(str(exc) if str(json_path) in str(exc) else f"{json_path}: {exc}") from None
    except (TypeError, ValueError) as exc:  # unknown or mistyped pipeline options
        text = str(exc).strip().splitlines()
        first = (text[0][:300] if text else "") or type(exc).__name__
        raise FinecutError(f"{json_path}: bad inference options ({first})") from None


#: File endings of torch checkpoints (official releases); they load through :mod:`finecut.models.official`.
TORCH_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin")


def load_official_engine(path: str | Path, arch: str | None = None, **options: Any) -> Engine:
    """An official release file as a finecut engine; ``options`` override the inference options (``target_size``,
    ``flip_tta``, ``threads``, ...)."""
    official = importlib.import_module("finecut.models.official")
    model, doc, _ = official.load_official(str(path), arch)
    return build_engine(model, doc, **options)


def load_model(name_or_path: str | Path = "default", *, arch: str | None = None,
               checkpoint: str | Path | None = None, **kwargs: Any) -> Engine:
    """Build an engine from a registered name, a checkpoint path (``.json``/``.safetensors``, either file), an
    official release file (``.pth`` with ``arch=`` naming or checking its architecture, e.g. ``"simpleclick-b"``;
    or an official architecture name with ``checkpoint=PATH``), or a ``NAME:KEY=VALUE,...`` spec of any of these.
    Other keyword arguments are inference options of the engine; ``threads`` also sizes OpenCV's pool
    (:mod:`finecut.threads`)."""
    configure_opencv(kwargs.get("threads"))
    key = str(name_or_path)
    if checkpoint is not None:
        return load_official_engine(checkpoint, arch or key, **kwargs)
    if arch is not None:
        return load_official_engine(key, arch, **kwargs)
    entry = ENGINES.get(key)
    if entry is not None and not _is_learned(entry):
        if kwargs.get("runtime", "torch") != "torch" or "onnx_dir" in kwargs:
            raise FinecutError(f"{key} has no networks: runtime=onnx is for learned models")
        kwargs.pop("runtime", None)
        return entry.build(**kwargs)
    shipped = shipped_checkpoints()
    if key in shipped:
        return load_checkpoint_engine(shipped[key], **kwargs)
    if key in PENDING_CHECKPOINTS:
        raise FinecutError(f"model {key!r}: {PENDING_CHECKPOINTS[key]}")
    if key == "default":
        return load_model(default_model_name(), **kwargs)
    path = Path(key)
    if path.suffix in TORCH_SUFFIXES and path.is_file():
        return load_official_engine(path, None, **kwargs)
    if path.suffix in (".json", ".safetensors") or path.exists():
        if not path.exists():
            raise FinecutError(f"{path}: checkpoint not found")
        return load_checkpoint_engine(path, **kwargs)
    if path.with_name(path.name + ".json").is_file():  # a checkpoint's stem, as training configs name them
        return load_checkpoint_engine(path.with_name(path.name + ".json"), **kwargs)
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


def format_model_spec(name: str, options: dict[str, Any]) -> str:
    """(name, options) -> ``NAME[:KEY=VALUE,...]`` (keys sorted), the label of a model with inference options."""
    return name + (":" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "")


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:KEY=VALUE,KEY=VALUE...]`` -> (name, inference options), e.g. ``ntclick:negative_rule=paper``.

    Only the last ``:`` followed by ``KEY=`` starts the options, so Windows drive letters and paths keep working."""
    name, sep, rest = spec.rpartition(":")
    if not sep or "=" not in rest.split(",")[0]:
        return spec, {}
    return name, dict(parse_option(item) for item in rest.split(",") if item)
