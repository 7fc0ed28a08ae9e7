"""The standard evaluation protocol (one evaluator for every engine).

- :mod:`~finecut.evaluation.protocol`: click simulation and metrics as pure functions (``next_click``, ``iou``, ...).
- :mod:`~finecut.evaluation.loop`: the per-sample click loop (``evaluate_sample``).
- :mod:`~finecut.evaluation.runner`: one engine on one dataset, with a run folder, resume and reports
  (``run_evaluation``).
- :mod:`~finecut.evaluation.report`: Markdown tables, mIoU plots, and the merged comparison table.
"""

from finecut.evaluation.config import DEFAULT_NOC_THRESHOLDS, EvalConfig
from finecut.evaluation.init_masks import InitMaskFolder
from finecut.evaluation.loop import SampleResult, evaluate_sample
from finecut.evaluation.protocol import error_maps, iou, miou_curve, next_click, noc, nof
from finecut.evaluation.report import load_summary, results_markdown, summary_markdown, write_results_table
from finecut.evaluation.runner import RunResult, run_evaluation
from finecut.evaluation.summary import summarize

__all__ = [
    "DEFAULT_NOC_THRESHOLDS",
    "EvalConfig",
    "InitMaskFolder",
    "RunResult",
    "SampleResult",
    "error_maps",
    "evaluate_sample",
    "iou",
    "load_summary",
    "miou_curve",
    "next_click",
    "noc",
    "nof",
    "results_markdown",
    "run_evaluation",
    "summarize",
    "summary_markdown",
    "write_results_table",
]
