"""Official RITM checkpoints (saic-vul/ritm_interactive_segmentation, ``HRNetModel``, the ``*_itermask`` releases:
HRNet-18s / 18 / 32 + OCR, Conv1S click fusion) -> :class:`finecut.models.focalclick.FocalClickSegmentor`
(``arch="focalclick_segmentor"``) behind the ``ritm`` engine (zoom-in, no refiner, no progressive merge).
"""

from __future__ import annotations

from typing import Any

import torch

from finecut.errors import FinecutError
from finecut.models.official import hrnet
from finecut.models.official.convert import Plan
from finecut.models.official.spec import ArchSpec


def plan_ritm(state: dict[str, torch.Tensor], params: dict[str, Any], spec: ArchSpec | None, source: str) -> Plan:
    if any(k.startswith("rgb_conv.") for k in state):
        raise FinecutError(f"{source}: RITM checkpoints with use_rgb_conv (the early baselines) are not supported; "
                           "the released *_itermask models (Conv1S) are")
    if "maps_transform.0.weight" not in state:
        raise FinecutError(f"{source}: not an official RITM checkpoint (no 'maps_transform.0.weight')")
    layout = hrnet.hrnet_layout(state, source)
    if spec is not None and spec.variant is not None and spec.variant != layout["name"]:
        raise FinecutError(f"{source}: the weights hold an {layout['name']}, not RITM-{spec.variant}")
    prompts = int(state["maps_transform.0.weight"].shape[1])
    if prompts != 3:
        raise FinecutError(f"{source}: the click encoder takes {prompts} maps; finecut supports the released layout "
                           "with the previous mask (3 maps)")
    model_config = {
        "arch": "focalclick_segmentor",
        "backbone": "hrnet18s",
        "head": "ocr",
        "head_channels": layout["ocr_mid"],
        "prompt_channels": 3,
        **hrnet.segmentor_options(layout, hrnet.fusion_activation(params)),
    }
    renames = hrnet.hrnet_renames("backbone.", "head.") + hrnet.conv1s_renames("click_fusion.")
    radius = params.get("norm_radius", 5)
    return Plan(
        layout=f"ritm-{layout['name']}",
        model_config=model_config,
        engine="ritm",
        pipeline={"target_size": 400, "click_radius": float(radius)},
        renames=renames,
        transforms={"click_fusion.net.3.scale": hrnet.scale_value},
        notes=[f"HRNet width {layout['width']}, OCR width {layout['ocr_mid'] // 2}"],
    )


__all__ = ["plan_ritm"]
