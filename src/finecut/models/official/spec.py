"""Official architecture names accepted by ``finecut.load_model(PATH, arch=NAME)`` / ``NAME:checkpoint=PATH``.

A name is a family (``simpleclick``, ``focalclick``, ``ritm``) optionally followed by the variant and, for
FocalClick, the pipeline stage: ``simpleclick-b``, ``focalclick-segformer-b0-s1``, ``focalclick-hrnet18s-s2``,
``ritm-hrnet32``. The variant is read from the weights; a variant in the name is checked against them. FocalClick's
stage (S1: the segmentor sees the target crop at half resolution; S2: at full) cannot be read from the weights: it
comes from the name, else from the checkpoint's config, else from an ``s1`` / ``s2`` token in the file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from finecut.errors import FinecutError

FAMILIES = ("simpleclick", "focalclick", "ritm")

#: Variant spellings per family -> canonical variant.
_VARIANTS: dict[str, dict[str, str]] = {
    "simpleclick": {"xtiny": "xtiny", "xt": "xtiny", "vit-xtiny": "xtiny", "b": "b", "vit-b": "b", "base": "b",
                    "l": "l", "vit-l": "l", "large": "l", "h": "h", "vit-h": "h", "huge": "h"},
    "focalclick": {"segformer-b0": "segformer-b0", "b0": "segformer-b0", "segformer-b3": "segformer-b3",
                   "b3": "segformer-b3", "hrnet18s": "hrnet18s", "hrnet18": "hrnet18", "hrnet32": "hrnet32"},
    "ritm": {"hrnet18": "hrnet18", "hrnet18s": "hrnet18s", "hrnet32": "hrnet32"},
}

#: Every name documented in docs/models.md (aliases above are accepted too).
OFFICIAL_ARCHS: tuple[str, ...] = (
    "simpleclick", "simpleclick-xtiny", "simpleclick-b", "simpleclick-l", "simpleclick-h",
    "focalclick", "focalclick-segformer-b0-s1", "focalclick-segformer-b0-s2", "focalclick-segformer-b3-s1",
    "focalclick-segformer-b3-s2", "focalclick-hrnet18s-s1", "focalclick-hrnet18s-s2", "focalclick-hrnet32-s2",
    "ritm", "ritm-hrnet18", "ritm-hrnet18s", "ritm-hrnet32",
)


@dataclass(frozen=True)
class ArchSpec:
    family: str
    variant: str | None = None
    stage: str | None = None  # "s1" / "s2" (FocalClick only)


def is_official_arch(name: str) -> bool:
    """Whether ``name`` parses as an official architecture name."""
    try:
        parse_arch(name)
    except FinecutError:
        return False
    return True


def parse_arch(name: str) -> ArchSpec:
    text = name.strip().lower().replace("_", "-")
    family = next((f for f in FAMILIES if text == f or text.startswith(f + "-")), None)
    if family is None:
        raise FinecutError(f"unknown official architecture {name!r}; known: {', '.join(OFFICIAL_ARCHS)}")
    rest = text[len(family):].strip("-")
    stage = None
    match = re.search(r"(?:^|-)(s[12])$", rest)
    if match:
        if family != "focalclick":
            raise FinecutError(f"{name!r}: only FocalClick has S1 / S2 stages")
        stage = match.group(1)
        rest = rest[: match.start()].strip("-")
    variant = None
    if rest:
        variant = _VARIANTS[family].get(rest)
        if variant is None:
            raise FinecutError(f"{name!r}: unknown {family} variant {rest!r}; known: "
                               f"{', '.join(sorted(set(_VARIANTS[family].values())))}")
    return ArchSpec(family, variant, stage)


def stage_from_filename(path: str | Path) -> str | None:
    """``"s1"`` / ``"s2"`` when the file name carries exactly one such token (``segformerB0_S1_cclvs.pth``)."""
    tokens = set(re.findall(r"(?:^|[^a-z0-9])(s[12])(?=$|[^a-z0-9])", Path(path).name.lower()))
    return tokens.pop() if len(tokens) == 1 else None


__all__ = ["ArchSpec", "FAMILIES", "OFFICIAL_ARCHS", "is_official_arch", "parse_arch", "stage_from_filename"]
