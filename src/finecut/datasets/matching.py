"""Listing image files and pairing images with masks by file stem (extensions may differ: .jpg / .bmp / .JPG)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from finecut.errors import FinecutError
from finecut.io import IMAGE_SUFFIXES

#: Suffixes a mask file name commonly adds to its image's stem, tried when masks sit next to the images.
COMMON_MASK_SUFFIXES = ("_mask", "-mask", "_gt", "-gt", "_label", "_labels", "_seg", "_matte", "_alpha", ".mask")


def require_dir(path: Path, what: str = "folder") -> Path:
    if not path.exists():
        raise FinecutError(f"{path}: {what} not found")
    if not path.is_dir():
        raise FinecutError(f"{path}: expected a {what}, found a file")
    return path


def list_images(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in ``folder`` (case-insensitive suffix match, hidden files skipped), sorted by name."""
    require_dir(folder)
    allowed = {s.lower() for s in suffixes}
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in allowed
    )


def index_by_stem(files: Sequence[Path]) -> dict[str, Path]:
    """``stem -> file``; two files with one stem (``a.jpg`` and ``a.png``) are an error naming both."""
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise FinecutError(f"{f}: ambiguous: {out[f.stem].name} in the same folder has the same stem")
        out[f.stem] = f
    return out


@dataclass(frozen=True)
class StemRule:
    """Mask stem = ``prefix + image stem + suffix``."""

    prefix: str = ""
    suffix: str = ""

    def mask_stem(self, image_stem: str) -> str:
        return f"{self.prefix}{image_stem}{self.suffix}"

    def image_stem(self, mask_stem: str) -> str | None:
        if not (mask_stem.startswith(self.prefix) and mask_stem.endswith(self.suffix)):
            return None
        end = len(mask_stem) - len(self.suffix)
        return mask_stem[len(self.prefix):end] if end > len(self.prefix) else None

    def describe(self) -> str:
        return f"{self.prefix}<stem>{self.suffix}"


def infer_stem_rule(image_stems: Sequence[str], mask_stems: Sequence[str], probe: int = 64) -> StemRule:
    """The prefix/suffix rule that pairs the most images with masks (exact stems win ties).

    Candidates come from the first ``probe`` images: every mask stem that contains an image stem at its start or end
    proposes the rest as a suffix or prefix.
    """
    masks = set(mask_stems)
    exact = StemRule()
    if all(s in masks for s in image_stems):
        return exact
    votes: Counter[StemRule] = Counter()
    for stem in list(image_stems)[:probe]:
        for m in mask_stems:
            if m != stem and m.startswith(stem):
                votes[StemRule(suffix=m[len(stem):])] += 1
            if m != stem and m.endswith(stem):
                votes[StemRule(prefix=m[: len(m) - len(stem)])] += 1
    candidates = [exact] + sorted(votes, key=lambda r: (-votes[r], r.prefix, r.suffix))[:16]

    def score(rule: StemRule) -> tuple[int, int]:
        return sum(rule.mask_stem(s) in masks for s in image_stems), -len(rule.prefix) - len(rule.suffix)

    return max(candidates, key=score)


def pair_by_stem(
    images: Sequence[Path],
    masks: Sequence[Path],
    mask_dir: Path,
    rule: StemRule | None = None,
    missing: str = "error",
) -> list[tuple[Path, Path]]:
    """Pair each image with the mask whose stem follows ``rule`` (inferred when None).

    ``missing``: ``"error"`` (an image without a mask raises, naming it) or ``"skip"``.
    """
    if missing not in ("error", "skip"):
        raise FinecutError(f"missing must be 'error' or 'skip', got {missing!r}")
    by_stem = index_by_stem(masks)
    if rule is None:
        rule = infer_stem_rule([p.stem for p in images], list(by_stem))
    pairs = []
    for img in images:
        mask = by_stem.get(rule.mask_stem(img.stem))
        if mask is None:
            if missing == "error":
                raise FinecutError(f"{img}: no mask named {rule.mask_stem(img.stem)}.* in {mask_dir}")
            continue
        pairs.append((img, mask))
    return pairs


def same_folder_split(files: Sequence[Path], suffix: str | None) -> tuple[list[Path], list[Path], StemRule]:
    """Split one folder holding both images and masks (``a.jpg`` + ``a_mask.png``) into images and masks."""
    stems = {p.stem for p in files}
    options = (suffix,) if suffix else COMMON_MASK_SUFFIXES
    for suf in options:
        masks = [p for p in files if p.stem.endswith(suf) and p.stem[: -len(suf)] in stems]
        if masks:
            mask_set = set(masks)
            images = [p for p in files if p not in mask_set and not p.stem.endswith(suf)]
            return images, masks, StemRule(suffix=suf)
    folder = files[0].parent if files else "folder"
    raise FinecutError(
        f"{folder}: images and masks in one folder need a mask suffix such as {', '.join(COMMON_MASK_SUFFIXES[:3])} "
        "(pass mask_suffix=)"
    )
