"""The one name -> builder mechanism behind every registry of finecut (networks, backbones, heads, engines).

A :class:`Registry` maps names to :class:`Entry` objects. An entry's ``target`` is either a callable or a lazy import
path ``"package.module:attribute"``, resolved on first use, so a registry can list builders that live in modules
(or layers) it must not import eagerly — ``import finecut`` stays free of torch. An entry also carries ``info``,
metadata about what it builds (whether an engine needs a network, default options, ...), in the spirit of timm's
registered model configs.

Each registry is declared in one place as a table (``REGISTRY.add(name, target, description, **info)``), like
segment_anything's ``sam_model_registry``; ``@REGISTRY.register(name)`` adds a callable entry, for extensions and tests.
An entry is callable: ``REGISTRY[name](*args, **kwargs)`` builds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from finecut.errors import FinecutError


@dataclass(frozen=True)
class Entry:
    """One registered builder: ``target`` (a callable or ``"module:attr"``), a one-line ``description`` and ``info``."""

    name: str
    target: str | Callable[..., Any]
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def load(self) -> Callable[..., Any]:
        """The builder itself (imports its module when ``target`` is an import path)."""
        if callable(self.target):
            return self.target
        module_name, sep, attr = self.target.partition(":")
        if not sep or not module_name or not attr:
            raise FinecutError(f"{self.name}: registry target {self.target!r} is not 'module:attribute'")
        return getattr(importlib.import_module(module_name), attr)

    def build(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)

    __call__ = build


class Registry(MutableMapping[str, Entry]):
    """Named :class:`Entry` objects of one kind (``kind`` names it in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str | Callable[..., Any], description: str = "", **info: Any) -> Entry:
        """Register ``target`` under ``name``; registering a different target under a taken name is an error."""
        entry = Entry(name, target, description, dict(info))
        known = self._entries.get(name)
        if known is not None and known.target != target:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str, description: str = "",
                 **info: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of :meth:`add` for a callable defined in place."""

        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, builder, description, **info)
            return builder

        return decorator

    def entry(self, name: str) -> Entry:
        """The entry of ``name``; an unknown name raises :class:`FinecutError` listing the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise FinecutError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}") from None

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.entry(name).build(*args, **kwargs)

    # MutableMapping: a registry reads like the dict it replaces (``name in REGISTRY``, ``REGISTRY[name](...)``)
    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __setitem__(self, name: str, entry: Entry) -> None:
        if not isinstance(entry, Entry):
            raise TypeError(f"a {self.kind} registry holds Entry objects, got {type(entry).__name__}")
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"
