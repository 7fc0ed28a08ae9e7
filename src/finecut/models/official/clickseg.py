"""Official FocalClick checkpoints (XavierCHEN34/ClickSEG): ``SegFormerModel`` (MiT-B0 / B3) and ``HRNetModel``
(HRNet-18s / 32 + OCR), S1 or S2 -> :class:`finecut.models.focalclick.FocalClickNet` behind the ``focalclick`` engine.

Official layout: ``feature_extractor.backbone.*`` (MiT with ``patch_embed_side1``, the clicks' patch embedding added
after stage 1) and ``feature_extractor.decode_head.*`` (SegFormer head), or ``feature_extractor.*`` (HRNet + OCR,
clicks through ``maps_transform`` = Conv1S); ``refiner.*`` the ``RefineLayer`` (``image_conv1`` conv+BN+ReLU,
``image_conv2/3`` and ``refine_fusion2/3`` Xception blocks, ``refine_fusion`` 1x1 conv+BN+ReLU on the segmentor
features, ``refine_pred`` / ``refine_trimap`` heads; all convs with bias; it sees the focus crop as raw [0, 1] RGB, the
positive and negative click maps and the coarse mask). The SegFormer model also holds a
``maps_transform`` and its refiner a ``feature_gate`` that its forward never uses.

S1 runs the segmentor on the 256-px target crop downsampled by 2 with click disks of radius 3 (SegFormer) or 2
(HRNet) drawn at 256 px; S2 on the full crop with radius 5.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from finecut.errors import FinecutError
from finecut.models.backbones.mit import MIT_VARIANTS
from finecut.models.official import hrnet
from finecut.models.official.convert import Plan
from finecut.models.official.spec import ArchSpec, stage_from_filename

_MIT = "feature_extractor.backbone."
_HEAD = "feature_extractor.decode_head."


def is_clickseg(state: dict[str, torch.Tensor]) -> bool:
    return "refiner.refine_pred.weight" in state or "refiner.image_conv1.conv.weight" in state


def _refiner_renames() -> list[tuple[str, str]]:
    renames = [("refiner.image_conv1.conv.", "refiner.image_conv.0.0."),
               ("refiner.image_conv1.norm.", "refiner.image_conv.0.1."),
               ("refiner.refine_fusion.conv.", "refiner.feature_proj.0."),
               ("refiner.refine_fusion.norm.", "refiner.feature_proj.1."),
               ("refiner.refine_pred.", "refiner.detail_head."),
               ("refiner.refine_trimap.", "refiner.boundary_head.")]
    xception = {"image_conv2": "image_conv.1", "image_conv3": "image_conv.2", "refine_fusion2": "fusion.0",
                "refine_fusion3": "fusion.1"}
    for old, new in xception.items():
        for i, part in enumerate(("conv3x3", "conv1x1", "norm")):
            renames.append((f"refiner.{old}.{part}.", f"refiner.{new}.{i}."))
    return renames


def _mit_variant(state: dict[str, torch.Tensor], source: str) -> str:
    dims = tuple(int(state[f"{_MIT}patch_embed{i}.proj.weight"].shape[0]) for i in range(1, 5))
    depths = tuple(len({int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(_MIT)}block{i}\.(\d+)\.", k))})
                   for i in range(1, 5))
    for name, cfg in MIT_VARIANTS.items():
        if cfg.embed_dims == dims and cfg.depths == depths:
            if name not in ("b0", "b3"):
                raise FinecutError(f"{source}: MiT-{name.upper()} FocalClick models are not supported (B0 and B3 are)")
            return name
    raise FinecutError(f"{source}: MiT with widths {dims} and depths {depths} is not a known SegFormer variant")


def _stage(params: dict[str, Any], spec: ArchSpec | None, source: str) -> str:
    if spec is not None and spec.stage is not None:
        return spec.stage
    configured = params.get("pipeline_version")
    if isinstance(configured, str) and configured.lower() in ("s1", "s2"):
        return configured.lower()
    from_name = stage_from_filename(source)
    if from_name is not None:
        return from_name
    raise FinecutError(f"{source}: cannot tell whether this FocalClick model is S1 or S2 (no config, no S1/S2 in the "
                       "file name); name it, e.g. arch='focalclick-segformer-b0-s1'")


def plan_clickseg(state: dict[str, torch.Tensor], params: dict[str, Any], spec: ArchSpec | None,
                  source: str) -> Plan:
    for key in ("refiner.image_conv1.conv.weight", "refiner.refine_fusion.conv.weight"):
        if key not in state:
            raise FinecutError(f"{source}: not an official FocalClick checkpoint (no {key!r})")
    stage = _stage(params, spec, source)
    refiner_in = int(state["refiner.image_conv1.conv.weight"].shape[1])
    if refiner_in != 6:
        raise FinecutError(f"{source}: the refiner takes {refiner_in} channels, not the released 6 "
                           "(image, positive and negative clicks, coarse mask)")
    refiner_channels = int(state["refiner.image_conv1.conv.weight"].shape[0])
    feature_dims = int(state["refiner.refine_fusion.conv.weight"].shape[1])
    refiner_options = {"click_channels": [1, 2], "bias": True, "project_first": True, "align_corners": True,
                       "unit_rgb": True}
    renames = _refiner_renames()
    unused = [("refiner.feature_gate.", "defined by the SegFormer RefineLayer, unused by its forward")]
    transforms = {}
    if f"{_MIT}patch_embed1.proj.weight" in state:
        variant = _mit_variant(state, source)
        name = f"segformer-{variant}"
        prompts = int(state[f"{_MIT}patch_embed_side1.proj.weight"].shape[1]) \
            if f"{_MIT}patch_embed_side1.proj.weight" in state else 0
        head_channels = int(state[f"{_HEAD}linear_fuse.conv.weight"].shape[0])
        config = {"arch": "focalclick", "backbone": f"mit_{variant}", "head": "segformer",
                  "head_channels": head_channels}
        segmentor = {"click_fusion": "side", "input_scale": 0.5 if stage == "s1" else 1.0, "align_corners": True}
        renames += [(_MIT, "segmentor.backbone."), (_HEAD, "segmentor.head.")]
        unused.append(("maps_transform.", "ClickSEG's SegFormerModel builds it but feeds the clicks through "
                                          "patch_embed_side1"))
        s1_radius = 3.0
    elif hrnet.is_hrnet(state):
        layout = hrnet.hrnet_layout(state, source)
        name = layout["name"]
        prompts = int(state["maps_transform.0.weight"].shape[1]) if "maps_transform.0.weight" in state else 0
        head_channels = layout["ocr_mid"]
        config = {"arch": "focalclick", "backbone": "hrnet18s", "head": "ocr", "head_channels": head_channels}
        segmentor = {**hrnet.segmentor_options(layout, hrnet.fusion_activation(params)),
                     "input_scale": 0.5 if stage == "s1" else 1.0}
        renames += hrnet.hrnet_renames("segmentor.backbone.", "segmentor.head.")
        renames += hrnet.conv1s_renames("segmentor.click_fusion.")
        transforms["segmentor.click_fusion.net.3.scale"] = hrnet.scale_value
        s1_radius = 2.0
    else:
        raise FinecutError(f"{source}: FocalClick checkpoint with an unknown segmentor (neither MiT nor HRNet keys)")
    if spec is not None and spec.variant is not None and spec.variant != name:
        raise FinecutError(f"{source}: the weights hold a FocalClick-{name}, not FocalClick-{spec.variant}")
    if prompts != 3:
        raise FinecutError(f"{source}: the segmentor takes {prompts} click maps, not the released 3 "
                           "(previous mask, positive, negative)")
    if feature_dims != head_channels:
        raise FinecutError(f"{source}: refiner expects {feature_dims}-channel features, the head gives {head_channels}")
    config.update({"prompt_channels": 3, "refiner_channels": refiner_channels, "segmentor_options": segmentor,
                   "refiner_options": refiner_options})
    radius = s1_radius if stage == "s1" else 5.0
    pipeline = {"target_size": 256, "square_input": True, "click_radius": radius, "refiner_max": 256}
    return Plan(
        layout=f"focalclick-{name}-{stage}",
        model_config=config,
        engine="focalclick",
        pipeline=pipeline,
        renames=renames,
        unused=unused,
        transforms=transforms,
        notes=[f"FocalClick {name} {stage.upper()}: segmentor at {'128' if stage == 's1' else '256'} px"],
    )


__all__ = ["is_clickseg", "plan_clickseg"]
