"""Label sets: a fixed list of classes with colours, hotkeys and stable category ids (``finecut app --labels``).

A label set is given as

* a comma-separated list of names: ``person,car,tree``;
* a JSON file (``.json``) or a YAML file (``.yaml`` / ``.yml``) holding either a list, or an object with a ``labels``
  list. Each entry is a name, or an object ``{"name": ..., "color": "#rrggbb", "hotkey": 1, "id": 7}`` where every
  key but ``name`` is optional.

Classes keep the order given. Category ids are the ``id`` given, else the position in the list (1, 2, ...; never an
id another class has); colours default to a fixed palette; the hotkeys 1–9 go, in order, to the first classes that did
not choose one. Without a label set, labels are free text (see :mod:`finecut.app.service`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finecut.errors import FinecutError

#: Colours given to classes that name none (distinct on a photo, and from the app's blue current object).
PALETTE: tuple[str, ...] = (
    "#ff6347", "#3cb371", "#ffc107", "#ba68c8", "#00bcd4", "#ff8a65", "#8bc34a", "#f06292", "#7986cb",
    "#4db6ac", "#ffd54f", "#a1887f", "#e57373", "#64b5f6", "#aed581", "#9575cd",
)
HOTKEYS: tuple[str, ...] = tuple("123456789")
#: Most classes a label set may hold; longest class name.
MAX_CLASSES = 500
MAX_NAME = 200
LABEL_FILE_SUFFIXES = (".json", ".yaml", ".yml")
#: Largest label file read.
MAX_FILE_BYTES = 1 << 20

_COLOR = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")

__all__ = ["LabelClass", "LabelSet", "load_label_set", "parse_label_set"]


@dataclass(frozen=True)
class LabelClass:
    """One class: ``name``, category ``id`` (>= 1), ``color`` (``#rrggbb``), ``hotkey`` (``"1"``–``"9"`` or None)."""

    name: str
    id: int
    color: str
    hotkey: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "color": self.color, "hotkey": self.hotkey}


@dataclass(frozen=True)
class LabelSet:
    """An ordered, fixed list of classes (see the module docstring)."""

    classes: tuple[LabelClass, ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise FinecutError("a label set needs at least one class")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def default(self) -> str:
        """The label of an object nobody chose a class for: the first class."""
        return self.classes[0].name

    def __contains__(self, label: object) -> bool:
        return any(c.name == label for c in self.classes)

    def category_ids(self) -> dict[str, int]:
        """Name -> category id, in list order."""
        return {c.name: c.id for c in self.classes}

    def check(self, label: str) -> str:
        """``label`` if it is a class of the set, else a :class:`FinecutError` listing the classes."""
        if label not in self:
            shown = ", ".join(self.names[:20]) + (" ..." if len(self.classes) > 20 else "")
            raise FinecutError(f"label {label[:80]!r} is not in the label set ({shown})")
        return label

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.classes]


# ---------------------------------------------------------------------- parsing
def _name(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise FinecutError(f"{where}: a class name must be a string, got {type(value).__name__}")
    name = value.strip()
    if not name:
        raise FinecutError(f"{where}: a class name must not be empty")
    if len(name) > MAX_NAME:
        raise FinecutError(f"{where}: class name is too long ({len(name)} characters, at most {MAX_NAME})")
    if any(ord(ch) < 32 for ch in name):
        raise FinecutError(f"{where}: class name {name[:40]!r} contains control characters")
    return name


def _color(value: Any, where: str) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        return "#" + "".join(f"{v:02x}" for v in value)
    if isinstance(value, str):
        m = _COLOR.fullmatch(value.strip())
        if m:
            digits = m.group(1).lower()
            return "#" + (digits if len(digits) == 6 else "".join(ch * 2 for ch in digits))
    raise FinecutError(f"{where}: colour must be '#rrggbb', '#rgb' or [r, g, b] (0-255), got {value!r}"[:200])


def _hotkey(value: Any, where: str) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or text not in HOTKEYS:
        raise FinecutError(f"{where}: hotkey must be one of 1-9, got {value!r}"[:200])
    return text


def _positive_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise FinecutError(f"{where}: id must be a whole number >= 1, got {value!r}"[:200])
    return value


_KEYS = {"name", "color", "colour", "hotkey", "id"}


def parse_label_set(entries: Iterable[Any], source: str = "label set") -> LabelSet:
    """Build a :class:`LabelSet` from a list of names or ``{"name", "color", "hotkey", "id"}`` objects."""
    items = list(entries)
    if not items:
        raise FinecutError(f"{source}: names no class")
    if len(items) > MAX_CLASSES:
        raise FinecutError(f"{source}: {len(items)} classes, at most {MAX_CLASSES}")
    raw: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"{source}: class {i + 1}"
        if isinstance(item, Mapping):
            unknown = sorted(set(item) - _KEYS)
            if unknown:
                raise FinecutError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
                                   "(allowed: name, color, hotkey, id)")
            if "name" not in item:
                raise FinecutError(f"{where}: needs a \"name\"")
            color = item.get("color", item.get("colour"))
            raw.append({
                "name": _name(item["name"], where),
                "color": None if color is None else _color(color, where),
                "hotkey": None if item.get("hotkey") is None else _hotkey(item["hotkey"], where),
                "id": None if item.get("id") is None else _positive_id(item["id"], where),
            })
        else:
            raw.append({"name": _name(item, where), "color": None, "hotkey": None, "id": None})
    _unique(source, [r["name"] for r in raw], "class name")
    _unique(source, [r["hotkey"] for r in raw if r["hotkey"]], "hotkey")
    _unique(source, [r["id"] for r in raw if r["id"] is not None], "id")
    taken_ids = {r["id"] for r in raw if r["id"] is not None}
    free_keys = [k for k in HOTKEYS if k not in {r["hotkey"] for r in raw}]
    classes = []
    next_id = 1
    for i, r in enumerate(raw):
        if r["id"] is None:
            while next_id in taken_ids:
                next_id += 1
            r["id"] = next_id
            taken_ids.add(next_id)
        hotkey = r["hotkey"]
        declined = isinstance(items[i], Mapping) and "hotkey" in items[i]  # "hotkey": null = no hotkey wanted
        if hotkey is None and not declined and free_keys:
            hotkey = free_keys.pop(0)
        classes.append(LabelClass(r["name"], r["id"], r["color"] or PALETTE[i % len(PALETTE)], hotkey))
    return LabelSet(tuple(classes))


def _unique(source: str, values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise FinecutError(f"{source}: {what} {value!r} appears twice")
        seen.add(value)


def _read_file(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FinecutError(f"{path}: label file is {size} bytes, at most {MAX_FILE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FinecutError(f"{path}: cannot read label file ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise FinecutError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise FinecutError(f"{path}: invalid YAML{where}: {problem}") from None


def load_label_set(spec: str | Path) -> LabelSet:
    """A label set from ``--labels``: a path to a ``.json`` / ``.yaml`` / ``.yml`` file, or comma-separated names."""
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() in LABEL_FILE_SUFFIXES:
        if not path.is_file():
            raise FinecutError(f"{path}: label file not found")
        data = _read_file(path)
        if isinstance(data, Mapping):
            if set(data) != {"labels"}:
                raise FinecutError(f"{path}: expected a list of classes, or an object with only a \"labels\" list")
            data = data["labels"]
        if not isinstance(data, list):
            raise FinecutError(f"{path}: expected a list of classes, got {type(data).__name__}")
        return parse_label_set(data, str(path))
    names = [part for part in (p.strip() for p in text.split(",")) if part]
    if not names:
        raise FinecutError(f"--labels {text[:80]!r}: give class names (person,car,tree) or a .json/.yaml file")
    return parse_label_set(names, "--labels")
