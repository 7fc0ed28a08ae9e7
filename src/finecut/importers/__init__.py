"""Reading existing annotations as objects: COCO instances JSON (RLE, polygons, boxes) and folders of PNG masks.

:mod:`finecut.importers.coco` reads and validates a COCO file; :mod:`finecut.importers.masks` reads PNG masks and
instance maps. Both give, for one image of known size, :class:`ImportedObject` s (label + bool mask) and the problems
met, so a caller can import what is good and report the rest.
"""

from finecut.importers.base import ImportedObject, ImageImport, resolve_label

__all__ = ["ImageImport", "ImportedObject", "resolve_label"]
