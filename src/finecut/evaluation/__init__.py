"""The standard evaluation protocol (one evaluator for every engine)."""

from finecut.evaluation.protocol import error_maps, iou, miou_curve, next_click, noc, nof

__all__ = ["error_maps", "iou", "miou_curve", "next_click", "noc", "nof"]
