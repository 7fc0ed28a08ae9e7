"""Official SimpleClick checkpoints (uncbiag/SimpleClick, ``PlainVitModel``) -> :class:`finecut.models.simpleclick.
SimpleClick` with ``neck="simpleclick"``.

Official layout (``is_plainvit_model.py``, ``models_vit.py``): ``backbone.*`` a MAE-style ViT (``patch_embed.proj``,
``cls_token``, ``pos_embed`` of ``1 + N`` tokens for the training crop, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,
mlp.fc1,mlp.fc2}``, and the unused ``fc_norm`` / ``head`` classifier), ``patch_embed_coords.proj`` the prompt patch
embedding (``[prev_mask, pos, neg]``), ``neck.down_{4,8,16,32}`` the ``SimpleFPN`` and ``head.*`` the
``SwinTransfomerSegHead`` (``convs.i.conv``, ``fusion_conv.conv``, ``up_conv1``, ``up_conv2``, ``conv_seg``).
Blocks attend within 224-pixel windows (``224 // patch`` tokens) except the last of each group of ``depth // 4``
blocks (6 for ViT-B's 12), which is global; the position embedding has no cls row in use.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from finecut.errors import FinecutError
from finecut.models.official.convert import Plan
from finecut.models.official.spec import ArchSpec

#: Attention heads of the released widths (not visible in the weights' shapes).
_HEADS_BY_WIDTH = {160: 4, 768: 12, 1024: 16, 1280: 16}
_VARIANT_BY_WIDTH = {160: "xtiny", 768: "b", 1024: "l", 1280: "h"}


#: The released models (``models/iter_mask/plainvit_{xtiny,base,large,huge}448_cocolvis_itermask.py``): ViT width,
#: blocks, heads, patch, SimpleFPN ``out_dims`` and head ``channels``; all trained on 448 x 448 crops.
RELEASED = {
    "xtiny": (160, 8, 4, 16, (96, 192, 288, 384), 128),
    "b": (768, 12, 12, 16, (128, 256, 512, 1024), 256),
    "l": (1024, 24, 16, 16, (192, 384, 768, 1536), 256),
    "h": (1280, 32, 16, 14, (240, 480, 960, 1920), 256),
}


def released_config(variant: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model config, pipeline options)`` of a released SimpleClick variant, as :func:`plan_simpleclick` builds
    them from its weights (for latency benchmarks with random weights, or building the official architecture)."""
    if variant not in RELEASED:
        raise FinecutError(f"unknown released SimpleClick variant {variant!r}; known: {', '.join(RELEASED)}")
    embed, depth, heads, patch, neck, channels = RELEASED[variant]
    config = {
        "arch": "simpleclick", "variant": variant, "img_size": [448, 448], "patch_size": [patch, patch],
        "embed_dim": embed, "depth": depth, "num_heads": heads, "mlp_ratio": 4.0, "window_size": 224 // patch,
        "global_attn_indexes": list(official_global_blocks(depth)), "neck": "simpleclick", "neck_dims": list(neck),
        "head_dim": channels, "head_upsample": "x1", "prompt_channels": 3, "align_corners": True,
    }
    return config, {"target_size": 448, "square_input": True, "click_radius": 5.0}


def is_simpleclick(state: dict[str, torch.Tensor]) -> bool:
    return "patch_embed_coords.proj.weight" in state or "backbone.blocks.0.attn.qkv.weight" in state


def _need(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise FinecutError(f"{source}: not an official SimpleClick checkpoint (no {key!r})")
    return state[key]


def official_global_blocks(depth: int) -> tuple[int, ...]:
    """Blocks with global attention in the official ``forward_backbone``: the last of each group of ``depth // 4``
    (groups of 6 for 12 blocks)."""
    if depth < 4 or depth % 4:
        raise FinecutError(f"official SimpleClick ViTs have a multiple of 4 blocks, this one has {depth}")
    group = 6 if depth == 12 else depth // 4
    return tuple(i for i in range(depth) if (i + 1) % group == 0)


def plan_simpleclick(state: dict[str, torch.Tensor], params: dict[str, Any], spec: ArchSpec | None,
                     source: str) -> Plan:
    patch_w = _need(state, "backbone.patch_embed.proj.weight", source)
    pos = _need(state, "backbone.pos_embed", source)
    coords_w = _need(state, "patch_embed_coords.proj.weight", source)
    embed, _, ph, pw = (int(d) for d in patch_w.shape)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))}
    if not blocks:
        raise FinecutError(f"{source}: no transformer blocks (backbone.blocks.N.*) in the checkpoint")
    depth = max(blocks) + 1
    backbone_params = params.get("backbone_params") if isinstance(params.get("backbone_params"), dict) else {}
    heads = backbone_params.get("num_heads") or _HEADS_BY_WIDTH.get(embed)
    if heads is None:
        raise FinecutError(f"{source}: a ViT of width {embed} is not a released SimpleClick variant and the "
                           "checkpoint's config does not give num_heads")
    fc1 = _need(state, "backbone.blocks.0.mlp.fc1.weight", source)
    tokens = int(pos.shape[1]) - 1  # the official embedding has a cls row first
    if backbone_params.get("img_size"):
        img = backbone_params["img_size"]
        img = (int(img), int(img)) if isinstance(img, int) else (int(img[0]), int(img[1]))
        grid = (img[0] // ph, img[1] // pw)
    else:
        side = math.isqrt(max(tokens, 0))
        grid = (side, side)
    if pos.ndim != 3 or grid[0] * grid[1] != tokens:
        raise FinecutError(f"{source}: backbone.pos_embed {tuple(pos.shape)} is not 1 + a {grid[0]}x{grid[1]} grid "
                           "of tokens")
    variant = _VARIANT_BY_WIDTH.get(embed)
    if spec is not None and spec.variant is not None and spec.variant != variant:
        raise FinecutError(f"{source}: the weights hold a ViT of width {embed} ({variant or 'no released variant'}), "
                           f"not SimpleClick-{spec.variant}")
    if coords_w.shape[1] != 3:
        raise FinecutError(f"{source}: the prompt embedding takes {coords_w.shape[1]} maps; finecut supports the "
                           "released layout with the previous mask (3 maps: previous mask, positive, negative)")
    neck_dims = [int(_need(state, k, source).shape[0]) for k in (
        "neck.down_4.5.weight", "neck.down_8.2.weight", "neck.down_16.0.weight", "neck.down_32.2.weight")]
    wide = int(_need(state, "head.convs.0.conv.weight", source).shape[0])
    channels = int(_need(state, "head.conv_seg.weight", source).shape[1])
    factor = wide // channels if channels and wide % channels == 0 else 0
    upsample = {1: "x1", 2: "x2", 4: "x4"}.get(factor)
    if upsample is None:
        raise FinecutError(f"{source}: head width {wide} vs prediction input {channels} is not x1 / x2 / x4")
    img_size = [grid[0] * ph, grid[1] * pw]
    model_config = {
        "arch": "simpleclick",
        "variant": variant or "b",
        "img_size": img_size,
        "patch_size": [ph, pw],
        "embed_dim": embed,
        "depth": depth,
        "num_heads": int(heads),
        "mlp_ratio": int(fc1.shape[0]) / embed,
        "window_size": 224 // ph,
        "global_attn_indexes": list(official_global_blocks(depth)),
        "neck": "simpleclick",
        "neck_dims": neck_dims,
        "head_dim": channels,
        "head_upsample": upsample,
        "prompt_channels": 3,
        "align_corners": True,
    }
    renames = [
        ("backbone.patch_embed.", "backbone.patch_embed."),
        ("backbone.pos_embed", "backbone.pos_embed"),
        ("backbone.blocks.", "backbone.blocks."),
        ("patch_embed_coords.", "prompt_embed."),
        ("neck.", "neck."),
        ("head.convs.", "head.convs."),
        ("head.fusion_conv.", "head.fusion_conv."),
        ("head.conv_seg.", "head.conv_seg."),
    ]
    unused = [
        ("backbone.cls_token", "class token: forward_backbone adds pos_embed[:, 1:] only"),
        ("backbone.fc_norm.", "classifier norm, unused by forward_backbone"),
        ("backbone.norm.", "classifier norm, unused by forward_backbone"),
        ("backbone.pre_logits.", "classifier, unused by forward_backbone"),
        ("backbone.head.", "ImageNet classifier, unused by forward_backbone"),
    ]
    if factor >= 2:
        renames.append(("head.up_conv1.", "head.up_conv1."))
    else:
        unused.append(("head.up_conv1.", "built by the head for every upsample mode, used only by x2 / x4"))
    if factor == 4:
        renames.append(("head.up_conv2.", "head.up_conv2."))
    else:
        unused.append(("head.up_conv2.", "built by the head for every upsample mode, used only by x4"))

    def pos_grid(value: torch.Tensor) -> torch.Tensor:
        return value[:, 1:].reshape(1, grid[0], grid[1], value.shape[-1])

    radius = params.get("norm_radius", 5)
    pipeline = {"target_size": max(img_size), "square_input": True, "click_radius": float(radius)}
    name = f"simpleclick-vit-{variant}" if variant else f"simpleclick-vit{embed}"
    return Plan(
        layout=name,
        model_config=model_config,
        engine="simpleclick",
        pipeline=pipeline,
        renames=renames,
        unused=unused,
        transforms={"backbone.pos_embed": pos_grid},
        notes=[f"ViT width {embed}, {depth} blocks, {heads} heads, patch {ph}, trained at {img_size[0]}x"
               f"{img_size[1]}; head upsample {upsample}"],
    )


__all__ = ["RELEASED", "is_simpleclick", "official_global_blocks", "plan_simpleclick", "released_config"]
