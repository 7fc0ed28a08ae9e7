"""What an importer gives for one image: objects (label + mask) and the problems met on the way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finecut.export import safe_name


@dataclass(frozen=True)
class ImportedObject:
    """One object read from a file: its ``label``, its bool H×W ``mask`` and where it came from (``source``)."""

    label: str
    mask: np.ndarray = field(compare=False)
    source: str = ""


@dataclass
class ImageImport:
    """The objects found for one image, and one-line messages about what could not be imported."""

    image: str
    objects: list[ImportedObject] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def resolve_label(label: str, known: Sequence[str] | None) -> str | None:
    """``label`` as one of the ``known`` names (a label set): the same name, else the name an export made file-name
    safe (``traffic_light`` for ``traffic light``); None when none matches. Without ``known``: ``label`` itself."""
    if not known:
        return label
    if label in known:
        return label
    folded = [name for name in known if name.casefold() == label.casefold()]
    if len(folded) == 1:
        return folded[0]
    safe = [name for name in known if safe_name(name) == label]
    return safe[0] if len(safe) == 1 else None
