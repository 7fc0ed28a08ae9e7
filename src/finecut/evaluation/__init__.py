"""The evaluation protocols (one evaluator for every engine).

- :mod:`~finecut.evaluation.protocol`: click simulation and metrics as pure functions (``next_click``, ``iou``, ...).
- :mod:`~finecut.evaluation.scribbles`, :mod:`~finecut.evaluation.perturb`, :mod:`~finecut.evaluation.merge`,
  :mod:`~finecut.evaluation.alpha`: FocalClick-XL's protocols as pure functions (scribble simulator, boxes, coarse
  masks, DAVIS-585-style initial masks, Progressive Merge, SAD / MSE / Grad) — see ``docs/evaluation.md``.
- :mod:`~finecut.evaluation.users`: the simulated user of each protocol.
- :mod:`~finecut.evaluation.loop`: the per-sample loop (``evaluate_sample``), the same for every protocol.
- :mod:`~finecut.evaluation.runner`: one engine on one dataset, with a run folder, resume and reports
  (``run_evaluation``).
- :mod:`~finecut.evaluation.report`: Markdown tables, mIoU plots, and the merged comparison table.
"""

from finecut.evaluation.alpha import AlphaFolder, alpha_errors, gradient_error, mse, sad
from finecut.evaluation.config import COARSE_LEVELS, DEFAULT_NOC_THRESHOLDS, PROTOCOLS, EvalConfig
from finecut.evaluation.init_masks import InitMaskFolder
from finecut.evaluation.loop import PromptNotSupported, SampleResult, evaluate_sample
from finecut.evaluation.merge import progressive_merge
from finecut.evaluation.perturb import CoarseMasks, SimulatedInitMasks, coarse_mask, defect_mask, gt_box, jitter_box
from finecut.evaluation.scribbles import HumanScribbles, next_scribble
from finecut.evaluation.protocol import error_maps, iou, miou_curve, next_click, noc, nof
from finecut.evaluation.report import load_summary, results_markdown, summary_markdown, write_results_table
from finecut.evaluation.runner import RunResult, run_evaluation
from finecut.evaluation.summary import summarize

__all__ = [
    "COARSE_LEVELS",
    "PROTOCOLS",
    "AlphaFolder",
    "CoarseMasks",
    "HumanScribbles",
    "PromptNotSupported",
    "SimulatedInitMasks",
    "alpha_errors",
    "coarse_mask",
    "defect_mask",
    "gradient_error",
    "gt_box",
    "jitter_box",
    "mse",
    "next_scribble",
    "progressive_merge",
    "sad",
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
