"""Importing existing annotations into the app's folder: a COCO file or a folder of PNG masks, image by image.

Each image of the folder that the source has objects for gets them as finished objects (one undoable step, see
:meth:`AnnotationService.import_objects`); they can then be reopened and corrected like any object. What cannot be
imported (a category outside the label set, a size that does not match, a box without a mask, ...) is reported, never
guessed; the rest of the source is imported all the same. Importing the same source twice adds nothing the second
time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finecut.errors import FinecutError
from finecut.importers.base import ImageImport
from finecut.importers.coco import CocoFile, coco_image_objects, parse_coco, read_coco
from finecut.importers.masks import mask_folder_objects
from finecut.io import image_header

if TYPE_CHECKING:
    from finecut.app.service import AnnotationService

#: Problems listed in a report (the count is always complete).
MAX_LISTED = 50


@dataclass
class ImportReport:
    """What an import did: images touched, objects added, duplicates not added again, and the problems met."""

    source: str
    images: int = 0
    objects: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    unmatched: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(text)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "images": self.images, "objects": self.objects,
                "duplicates": self.duplicates, "problems": self.problems, "problem_count": self.problem_count,
                "unmatched": self.unmatched[:MAX_LISTED], "unmatched_count": len(self.unmatched)}

    def summary(self) -> str:
        text = f"{self.source}: imported {self.objects} object(s) into {self.images} image(s)"
        if self.duplicates:
            text += f"; {self.duplicates} already there"
        if self.unmatched:
            text += f"; {len(self.unmatched)} image(s) of the source are not in the folder"
        if self.problem_count:
            text += f"; {self.problem_count} problem(s)"
        return text


def _apply(service: "AnnotationService", found: ImageImport, report: ImportReport) -> None:
    for text in found.problems:
        report.problem(text)
    if not found.objects:
        return
    try:
        counts = service.import_objects(found.image, found.objects)
    except FinecutError as exc:
        report.problem(f"{found.image}: {exc}")
        return
    report.objects += counts["added"]
    report.duplicates += counts["duplicates"]
    if counts["added"]:
        report.images += 1


def _size(service: "AnnotationService", name: str) -> tuple[int, int]:
    header = image_header(service.folder.path(name), name, service.config.limits.max_pixels)
    return header.height, header.width


def import_coco(service: "AnnotationService", coco: CocoFile) -> ImportReport:
    """Import the objects of a validated COCO file into the images of the service's folder."""
    report = ImportReport(Path(coco.source).name)
    for text in coco.problems:
        report.problem(text)
    labels = service.labels.names if service.labels is not None else None
    names = service.folder.names()
    matched: set[int] = set()
    for name in names:
        try:
            image = coco.image(name)
            if image is None:
                continue
            matched.add(image.id)
            height, width = _size(service, name)
            found = coco_image_objects(coco, name, height, width, labels)
        except FinecutError as exc:
            report.problem(f"{name}: {exc}" if not str(exc).startswith(name) else str(exc))
            continue
        if found is not None:
            _apply(service, found, report)
    report.unmatched = [img.file_name for img in coco.images.values() if img.id not in matched]
    return report


def import_coco_bytes(service: "AnnotationService", data: bytes, source: str = "COCO file") -> ImportReport:
    return import_coco(service, parse_coco(data, source))


def import_masks(service: "AnnotationService", masks_dir: str | Path) -> ImportReport:
    """Import PNG masks / instance maps (see :mod:`finecut.importers.masks`) into the images of the folder."""
    root = Path(masks_dir)
    if not root.is_dir():
        raise FinecutError(f"{root}: masks folder not found")
    if root.resolve() == service.folder.root:
        raise FinecutError(f"{root}: the masks folder must not be the image folder itself")
    report = ImportReport(root.name or str(root))
    labels = service.labels.names if service.labels is not None else None
    for name in service.folder.names():
        try:
            height, width = _size(service, name)
            found = mask_folder_objects(root, name, height, width, service.default_label, labels,
                                        image_path=service.folder.path(name))
        except FinecutError as exc:
            report.problem(f"{name}: {exc}" if not str(exc).startswith(name) else str(exc))
            continue
        if found is not None:
            _apply(service, found, report)
    return report


def import_path(service: "AnnotationService", source: str | Path) -> ImportReport:
    """Import a COCO JSON file, or a folder of PNG masks."""
    path = Path(source)
    if path.is_dir():
        return import_masks(service, path)
    if path.is_file():
        return import_coco(service, read_coco(path))
    raise FinecutError(f"{path}: not found (give a COCO .json file or a folder of PNG masks)")
