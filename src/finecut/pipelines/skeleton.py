"""The learned pipelines' skeleton: one click's shared steps, with hooks for each method's own part.

:class:`CropPipeline` is the base of the learned engines (FocalClick / SimpleClick / RITM, NTClick). Its
:meth:`~CropPipeline.predict` runs, per click:

1. the image's features (:meth:`~finecut.engines.base.Engine.features_for`: encoded again when the caller passed none);
2. the starting probabilities (the previous prediction's, else the prior mask, else zeros) and the clicks the network
   sees (hook :meth:`~CropPipeline.network_clicks`; by default a box without a positive click adds one at its centre);
3. nothing to act on (hook :meth:`~CropPipeline.has_prompts`; by default no click and no scribble): the starting
   probabilities come back unchanged, with state ``{"num_clicks": 0}``;
4. zoom-in (:class:`~finecut.pipelines.transforms.ZoomIn`): the target crop, seen at the size the hook
   :meth:`~CropPipeline.crop_sizer` gives (by default :meth:`~CropPipeline.input_size`), placed by the hook
   :meth:`~CropPipeline.place_crop`;
5. the method's part, hook :meth:`~CropPipeline.run`, on a :class:`Step` that carries all of the above; it returns
   an :class:`~finecut.engines.base.EngineOutput` (probabilities, and optionally a final ``mask`` or an ``alpha``
   matte) and its own state, which follows the shared ``num_clicks`` and ``target_crop``;
6. with the ``zoom_first_pass`` option (engines that declare it; off by default), an object's first pass (an empty
   starting mask, and a click or scribbles) runs :meth:`~CropPipeline.run` a second time: on the Target Crop of the
   first pass's mask, with the same prompts and the first pass's probabilities as the previous mask, so the first
   interaction is also seen zoomed in (state ``first_pass_crop``: the first pass's crop; ``target_crop`` is the
   second's). Nothing found by the first pass, or ``zoom_in`` off: no second pass.

Tools for :meth:`~CropPipeline.run`: :meth:`~CropPipeline.prompt_maps` (the crop's prompt maps in the network's
layout), :meth:`Crop.paste <finecut.pipelines.transforms.Crop.paste>` (the crop's answer back into a full-size
canvas), :attr:`Step.outside_box` (the pixels a prompt box excludes), and the transforms of
:mod:`finecut.pipelines.transforms` (:class:`~finecut.pipelines.transforms.FlipTTA` around a network call,
:class:`~finecut.pipelines.transforms.ProgressiveMerge`). Construction is shared too: options are the class's
``defaults``, then the network's stored ``pipeline`` settings, then the caller's (unknown ones refused); the prompt
layout and normalisation come from :func:`finecut.model_inputs.input_spec`; hooks :meth:`~CropPipeline.check` and
:meth:`~CropPipeline.setup` take the method's own validation and set-up.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from finecut.engines.base import Engine, EngineOutput, Prediction
from finecut.model_inputs import crop_prompt_maps, input_spec
from finecut.pipelines import common
from finecut.pipelines.common import check_options, configure_torch, previous_probs
from finecut.pipelines.geometry import integer_box, net_size
from finecut.pipelines.transforms import Crop, ZoomIn
from finecut.prompts import Click, Prompts


@dataclass
class Step:
    """What one click's method-specific part works from (all at original resolution unless named otherwise)."""

    image: np.ndarray  # RGB uint8 (H, W, 3)
    features: Any  # what the engine's encode_image returned for the image
    prompts: Prompts
    previous: Prediction | None
    prev: np.ndarray  # starting probabilities, float32 (H, W)
    prev_mask: np.ndarray  # prev > 0.5
    clicks: tuple[Click, ...]  # the clicks the network sees (network_clicks)
    click: Click | None  # the newest click, None when only a box or scribbles were given
    crop: Crop  # the target crop (zoom-in) and its network input size

    @property
    def shape(self) -> tuple[int, int]:
        return self.prev.shape  # type: ignore[return-value]

    @cached_property
    def outside_box(self) -> np.ndarray | None:
        """(H, W) bool: the pixels outside the prompt box (which is never object); None without a box."""
        if self.prompts.box is None:
            return None
        h, w = self.shape
        outside = np.ones((h, w), bool)
        bx0, by0, bx1, by1 = integer_box(self.prompts.box.as_tuple(), h, w)
        outside[by0:by1, bx0:bx1] = False
        return outside


class CropPipeline(Engine):
    """Base of the learned engines: a network behind the shared per-click steps (see the module docstring)."""

    #: The method's name in messages ("unknown FocalClick option(s)").
    method: ClassVar[str] = "pipeline"
    #: Every option the engine takes, with its default.
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: Options that :meth:`config` repeats at its top level.
    config_keys: ClassVar[tuple[str, ...]] = ("zoom_in",)
    #: Options whose values the engine validates itself, in :meth:`check` or :meth:`setup` (they take more than their
    #: default's kind).
    own_checks: ClassVar[tuple[str, ...]] = ()
    features_type: ClassVar[type | None] = torch.Tensor
    #: The attributes that hold the method's networks (set by :meth:`setup`). Every network call goes through them,
    #: so a runtime can put a callable with the module's signature in their place (tensors in, the module's dict of
    #: named tensors out; :func:`finecut.onnx.runtime.attach`).
    networks: ClassVar[tuple[str, ...]] = ()
    #: What the networks run on: ``"torch"`` (the modules themselves) or the runtime that replaced them (``"onnx"``).
    runtime: str = "torch"

    def __init__(self, net: nn.Module, name: str | None = None, checkpoint: dict[str, Any] | None = None,
                 threads: int | None = None, **options: Any) -> None:
        check_options(options, self.defaults, self.method, self.own_checks)
        self.check(net, options)
        self.net = net.eval()
        if name is not None:
            self.name = name
        # the defaults, then settings stored with the architecture (target size, expansions, ...), then the caller's
        self.options = {**self.defaults, **getattr(net, "pipeline", {}), **options}
        self.checkpoint = checkpoint or {}
        #: Prompt layout and image normalisation (the checkpoint's "inputs", else what the network declares).
        self.inputs = input_spec(net, self.checkpoint)
        self.setup(net)
        #: The thread count asked for (None: :func:`finecut.threads.inference_threads`'s choice), for a runtime too.
        self.threads = threads
        configure_torch(threads)

    # ----------------------------------------------------------------- hooks
    def check(self, net: nn.Module, options: Mapping[str, Any]) -> None:
        """Refuse a network or options the method cannot use (before anything is set up). Default: nothing."""

    def setup(self, net: nn.Module) -> None:
        """The method's own set-up once options and inputs are known (sub-networks, derived options)."""

    def network_clicks(self, prompts: Prompts, shape: tuple[int, int]) -> tuple[Click, ...]:
        """The clicks the network sees (default :func:`finecut.pipelines.common.network_clicks`)."""
        return common.network_clicks(prompts, shape)

    def has_prompts(self, prompts: Prompts, clicks: tuple[Click, ...]) -> bool:
        """Whether the step has anything to act on; without, the starting probabilities are returned unchanged.
        Default: a click (a box counts through its centre click) or a scribble; a prior mask alone does not."""
        return bool(clicks or prompts.scribbles)

    def input_size(self, width: int, height: int, target: int | None = None) -> tuple[int, int]:
        """(height, width) of the network input for a crop: long side ``target`` (default the ``target_size``
        option), aspect kept, multiples of 16; ``target`` squared with the ``square_input`` option."""
        target = int(target or self.options["target_size"])
        if self.options.get("square_input"):
            return target, target
        return net_size(width, height, target)

    def crop_sizer(self, prev_mask: np.ndarray) -> Callable[[int, int], tuple[int, int]]:
        """The network input size of this step's target crop, as a function of the crop's width and height (hook).
        Default: :meth:`input_size`."""
        return self.input_size

    def place_crop(self, crop: Crop, features: Any) -> Crop:
        """The target crop as the method reads it (hook; e.g. moved onto an image pyramid's grid). Default: as is."""
        return crop

    @abc.abstractmethod
    def run(self, step: Step) -> EngineOutput:
        """The method's part of a step: probabilities (and optionally ``mask`` / ``alpha``) and its own state."""

    # ----------------------------------------------------------------- shared steps
    def config(self) -> dict[str, Any]:
        training = self.checkpoint.get("training", {})
        return {"name": self.name, "model": self.checkpoint.get("model", {}), "pipeline": dict(self.options),
                **{key: self.options[key] for key in self.config_keys}, "trained_steps": training.get("step"),
                "runtime": self.runtime}

    def prompt_maps(self, step: Step, crop: Crop | None = None) -> torch.Tensor:
        """(1, C, h, w) prompt maps of ``crop`` (default: the step's target crop) in the network's prompt layout:
        the previous probabilities, click disks of ``click_radius`` network pixels and the scribbles."""
        crop = crop or step.crop
        return crop_prompt_maps(step.prompts, step.clicks, step.prev, crop.box, crop.size_hw,
                                self.options["click_radius"], self.inputs.prompt_layout)

    @torch.inference_mode()
    def predict(self, image: np.ndarray, features: Any, prompts: Prompts,
                previous: Prediction | None) -> EngineOutput:
        h, w = image.shape[:2]
        features = self.features_for(image, features)
        prev = previous_probs(prompts, previous, (h, w))
        clicks = self.network_clicks(prompts, (h, w))
        if not self.has_prompts(prompts, clicks):
            return EngineOutput(prev.copy(), {"num_clicks": 0})
        click = prompts.clicks[-1] if prompts.clicks else None
        zoom = ZoomIn.from_options(self.options)

        def step_from(start: np.ndarray, start_mask: np.ndarray) -> Step:
            """The step starting from ``start`` (probabilities), its Target Crop zoomed in on ``start_mask``."""
            crop = self.place_crop(zoom.crop(start_mask, prompts, click, self.crop_sizer(start_mask)), features)
            return Step(image, features, prompts, previous, start, start_mask, clicks, click, crop)

        step = step_from(prev, prev > 0.5)
        out = self.run(step)
        if (self.options.get("zoom_first_pass") and zoom.enabled and not step.prev_mask.any()
                and (click is not None or prompts.scribbles)):
            first_mask = out.probs > 0.5
            if first_mask.any():  # again on the first pass's own Target Crop, its answer as the previous mask
                first_crop = list(step.crop.box)
                step = step_from(out.probs, first_mask)
                out = self.run(step)
                out.state["first_pass_crop"] = first_crop
        out.state = {"num_clicks": len(prompts.clicks), "target_crop": list(step.crop.box), **out.state}
        return out


__all__ = ["CropPipeline", "Step"]
