"""Official checkpoints (SimpleClick, FocalClick / ClickSEG, RITM) load onto finecut's modules.

The released weights are not available offline, so each test writes a randomly initialised state dict in the official
key layout. The layouts below are listed from the public model definitions (uncbiag/SimpleClick
``is_plainvit_model.py`` / ``models_vit.py`` / ``swin_transformer.py``; ClickSEG ``is_segformer_model.py`` /
``is_hrnet_model.py`` / ``segformer/*``; RITM ``is_model.py`` / ``hrnet_ocr.py`` / ``ocr.py``), module by module as
the official constructors build them; they do not use finecut's mapping.
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import finecut
from finecut.errors import FinecutError
from finecut.models.checkpoint import load_checkpoint, save_checkpoint
from finecut.models.official import OFFICIAL_ARCHS, convert_official, load_official, parse_arch, plan_official
from finecut.models.official.convert import convert_state
from finecut.models.official.simpleclick import released_config
from finecut.models.registry import build_model

Layout = dict[str, tuple[int, ...]]


# ----------------------------------------------------------------------------- official layouts (key -> shape)


def _conv(out: Layout, name: str, cin: int, cout: int, k: int, bias: bool = True, groups: int = 1) -> None:
    out[f"{name}.weight"] = (cout, cin // groups, k, k)
    if bias:
        out[f"{name}.bias"] = (cout,)


def _deconv(out: Layout, name: str, cin: int, cout: int, k: int = 2) -> None:
    out[f"{name}.weight"] = (cin, cout, k, k)
    out[f"{name}.bias"] = (cout,)


def _affine(out: Layout, name: str, c: int) -> None:  # LayerNorm / GroupNorm
    out[f"{name}.weight"] = (c,)
    out[f"{name}.bias"] = (c,)


def _bn(out: Layout, name: str, c: int) -> None:
    _affine(out, name, c)
    out[f"{name}.running_mean"] = (c,)
    out[f"{name}.running_var"] = (c,)
    out[f"{name}.num_batches_tracked"] = ()


def _linear(out: Layout, name: str, cin: int, cout: int) -> None:
    out[f"{name}.weight"] = (cout, cin)
    out[f"{name}.bias"] = (cout,)


def simpleclick_layout(embed: int, depth: int, patch: int, img: int, neck: tuple[int, int, int, int],
                       channels: int, upsample: str = "x1") -> Layout:
    """PlainVitModel: VisionTransformer backbone, patch_embed_coords, SimpleFPN neck, SwinTransfomerSegHead."""
    out: Layout = {}
    _conv(out, "backbone.patch_embed.proj", 3, embed, patch)
    out["backbone.cls_token"] = (1, 1, embed)
    out["backbone.pos_embed"] = (1, (img // patch) ** 2 + 1, embed)
    for i in range(depth):
        b = f"backbone.blocks.{i}"
        _affine(out, f"{b}.norm1", embed)
        _affine(out, f"{b}.norm2", embed)
        _linear(out, f"{b}.attn.qkv", embed, 3 * embed)
        _linear(out, f"{b}.attn.proj", embed, embed)
        _linear(out, f"{b}.mlp.fc1", embed, 4 * embed)
        _linear(out, f"{b}.mlp.fc2", 4 * embed, embed)
    _affine(out, "backbone.fc_norm", embed)
    _linear(out, "backbone.head", embed, 1000)
    _conv(out, "patch_embed_coords.proj", 3, embed, patch)
    o4, o8, o16, o32 = neck
    c4 = max(o4 * 2, embed // 2)
    _deconv(out, "neck.down_4.0", embed, c4)
    _affine(out, "neck.down_4.1", c4)
    _deconv(out, "neck.down_4.3", c4, c4 // 2)
    _affine(out, "neck.down_4.4", c4 // 2)
    _conv(out, "neck.down_4.5", c4 // 2, o4, 1)
    _affine(out, "neck.down_4.6", o4)
    c8 = max(o8, embed // 2)
    _deconv(out, "neck.down_8.0", embed, c8)
    _affine(out, "neck.down_8.1", c8)
    _conv(out, "neck.down_8.2", c8, o8, 1)
    _affine(out, "neck.down_8.3", o8)
    _conv(out, "neck.down_16.0", embed, o16, 1)
    _affine(out, "neck.down_16.1", o16)
    c32 = max(o32, embed * 2)
    _conv(out, "neck.down_32.0", embed, c32, 2)
    _affine(out, "neck.down_32.1", c32)
    _conv(out, "neck.down_32.2", c32, o32, 1)
    _affine(out, "neck.down_32.3", o32)
    wide = channels * {"x1": 1, "x2": 2, "x4": 4}[upsample]
    for i, c in enumerate(neck):
        _conv(out, f"head.convs.{i}.conv", c, wide, 1)
    _conv(out, "head.fusion_conv.conv", 4 * wide, wide, 1)
    for name, c in (("up_conv1", wide), ("up_conv2", wide // 2)):
        _deconv(out, f"head.{name}.0", c, c // 2)
        _affine(out, f"head.{name}.1", c // 2)
        _conv(out, f"head.{name}.2", c // 2, c // 2, 1)
        _affine(out, f"head.{name}.3", c // 2)
    _conv(out, "head.conv_seg", channels, 1, 1)
    return out


SIMPLECLICK_UNUSED = ("backbone.cls_token", "backbone.fc_norm.", "backbone.head.", "head.up_conv1.", "head.up_conv2.")

#: (embed, depth, patch, neck out_dims, head channels) of the released configs (plainvit_*448_cocolvis_itermask.py).
SIMPLECLICK_RELEASES = {
    "xtiny": (160, 8, 16, (96, 192, 288, 384), 128),
    "b": (768, 12, 16, (128, 256, 512, 1024), 256),
    "l": (1024, 24, 16, (192, 384, 768, 1536), 256),
    "h": (1280, 32, 14, (240, 480, 960, 1920), 256),
}


def _mit(out: Layout, prefix: str, dims: tuple[int, ...], depths: tuple[int, ...], side: int) -> None:
    """ClickSEG mix_transformer.MixVisionTransformer (patch 7/4 then 3/2, sr 8/4/2/1, mlp 4, side embedding)."""
    cin = 3
    for s, (d, k) in enumerate(zip(dims, (7, 3, 3, 3)), start=1):
        _conv(out, f"{prefix}patch_embed{s}.proj", cin, d, k)
        _affine(out, f"{prefix}patch_embed{s}.norm", d)
        cin = d
    _conv(out, f"{prefix}patch_embed_side1.proj", side, dims[0], 7)
    _affine(out, f"{prefix}patch_embed_side1.norm", dims[0])
    for s, (d, n, sr) in enumerate(zip(dims, depths, (8, 4, 2, 1)), start=1):
        for i in range(n):
            b = f"{prefix}block{s}.{i}"
            _affine(out, f"{b}.norm1", d)
            _linear(out, f"{b}.attn.q", d, d)
            _linear(out, f"{b}.attn.kv", d, 2 * d)
            _linear(out, f"{b}.attn.proj", d, d)
            if sr > 1:
                _conv(out, f"{b}.attn.sr", d, d, sr)
                _affine(out, f"{b}.attn.norm", d)
            _affine(out, f"{b}.norm2", d)
            _linear(out, f"{b}.mlp.fc1", d, 4 * d)
            _conv(out, f"{b}.mlp.dwconv.dwconv", 4 * d, 4 * d, 3, groups=4 * d)
            _linear(out, f"{b}.mlp.fc2", 4 * d, d)
        _affine(out, f"{prefix}norm{s}", d)


def _refine_layer(out: Layout, feature_dims: int, gate: bool, mid: int = 32) -> None:
    """ClickSEG RefineLayer: ConvModule (conv + norm, biased conv), XConvBnRelu blocks, two 3x3 heads."""
    def conv_module(name: str, cin: int, k: int) -> None:
        _conv(out, f"refiner.{name}.conv", cin, mid, k)
        _bn(out, f"refiner.{name}.norm", mid)

    def xconv(name: str) -> None:
        _conv(out, f"refiner.{name}.conv3x3", mid, mid, 3, groups=mid)
        _conv(out, f"refiner.{name}.conv1x1", mid, mid, 1)
        _bn(out, f"refiner.{name}.norm", mid)

    conv_module("image_conv1", 6, 3)
    xconv("image_conv2")
    xconv("image_conv3")
    conv_module("refine_fusion", feature_dims, 1)
    xconv("refine_fusion2")
    xconv("refine_fusion3")
    if gate:
        _conv(out, "refiner.feature_gate.0", mid, 1, 1)
    _conv(out, "refiner.refine_pred", mid, 1, 3)
    _conv(out, "refiner.refine_trimap", mid, 1, 3)


def clickseg_segformer_layout(version: str) -> Layout:
    """ClickSEG SegFormerModel (b0: widths 32..256, head 256; b3: 64..512, depths 3/4/18/3, head 512)."""
    dims, depths, embed = {"b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
                           "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 512)}[version]
    out: Layout = {}
    _mit(out, "feature_extractor.backbone.", dims, depths, side=3)
    for i, d in enumerate(dims, start=1):
        _linear(out, f"feature_extractor.decode_head.linear_c{i}.proj", d, embed)
    _conv(out, "feature_extractor.decode_head.linear_fuse.conv", 4 * embed, embed, 1, bias=False)
    _bn(out, "feature_extractor.decode_head.linear_fuse.bn", embed)
    _conv(out, "feature_extractor.decode_head.linear_pred", embed, 1, 1)
    _conv(out, "maps_transform.0", 3, 16, 3)  # SegFormerModel's own maps_transform (unused by its forward)
    _conv(out, "maps_transform.2", 16, 32, 3)
    out["maps_transform.3.scale"] = (1,)
    _refine_layer(out, embed, gate=True)
    return out


def hrnet_ocr_layout(width: int, ocr_width: int, small: bool, prefix: str = "feature_extractor.") -> Layout:
    """RITM hrnet_ocr.HighResolutionNet (num_classes=1, OCR head) + ISModel.maps_transform (Conv1S)."""
    out: Layout = {}
    _conv(out, f"{prefix}conv1", 3, 64, 3, bias=False)
    _bn(out, f"{prefix}bn1", 64)
    _conv(out, f"{prefix}conv2", 64, 64, 3, bias=False)
    _bn(out, f"{prefix}bn2", 64)
    blocks = 2 if small else 4
    cin = 64
    for i in range(blocks):  # BottleneckV1b, expansion 4
        b = f"{prefix}layer1.{i}"
        _conv(out, f"{b}.conv1", cin, 64, 1, bias=False)
        _bn(out, f"{b}.bn1", 64)
        _conv(out, f"{b}.conv2", 64, 64, 3, bias=False)
        _bn(out, f"{b}.bn2", 64)
        _conv(out, f"{b}.conv3", 64, 256, 1, bias=False)
        _bn(out, f"{b}.bn3", 256)
        if i == 0:
            _conv(out, f"{b}.downsample.0", 64, 256, 1, bias=False)
            _bn(out, f"{b}.downsample.1", 256)
        cin = 256
    pre = [256]
    modules = (1, 3, 2) if small else (1, 4, 3)
    for stage, count in zip((2, 3, 4), modules):
        cur = [width * 2**i for i in range(stage)]
        t = f"{prefix}transition{stage - 1}"
        for i, c in enumerate(cur):
            if i < len(pre):
                if pre[i] != c:
                    _conv(out, f"{t}.{i}.0", pre[i], c, 3, bias=False)
                    _bn(out, f"{t}.{i}.1", c)
            else:
                for j in range(i + 1 - len(pre)):
                    cout = c if j == i - len(pre) else pre[-1]
                    _conv(out, f"{t}.{i}.{j}.0", pre[-1], cout, 3, bias=False)
                    _bn(out, f"{t}.{i}.{j}.1", cout)
        for m in range(count):
            s = f"{prefix}stage{stage}.{m}"
            for br, c in enumerate(cur):
                for k in range(blocks):  # BasicBlockV1b
                    _conv(out, f"{s}.branches.{br}.{k}.conv1", c, c, 3, bias=False)
                    _bn(out, f"{s}.branches.{br}.{k}.bn1", c)
                    _conv(out, f"{s}.branches.{br}.{k}.conv2", c, c, 3, bias=False)
                    _bn(out, f"{s}.branches.{br}.{k}.bn2", c)
            for i, ci in enumerate(cur):
                for j, cj in enumerate(cur):
                    f = f"{s}.fuse_layers.{i}.{j}"
                    if j > i:
                        _conv(out, f"{f}.0", cj, ci, 1, bias=False)
                        _bn(out, f"{f}.1", ci)
                    elif j < i:
                        for k in range(i - j):
                            cout = ci if k == i - j - 1 else cj
                            _conv(out, f"{f}.{k}.0", cj, cout, 3, bias=False)
                            _bn(out, f"{f}.{k}.1", cout)
        pre = cur
    last, mid, key = sum(pre), 2 * ocr_width, ocr_width
    _conv(out, f"{prefix}conv3x3_ocr.0", last, mid, 3)
    _bn(out, f"{prefix}conv3x3_ocr.1", mid)
    ocb = f"{prefix}ocr_distri_head.object_context_block"
    for name in ("f_pixel", "f_object"):
        _conv(out, f"{ocb}.{name}.0", mid, key, 1, bias=False)
        _bn(out, f"{ocb}.{name}.1.0", key)
        _conv(out, f"{ocb}.{name}.2", key, key, 1, bias=False)
        _bn(out, f"{ocb}.{name}.3.0", key)
    _conv(out, f"{ocb}.f_down.0", mid, key, 1, bias=False)
    _bn(out, f"{ocb}.f_down.1.0", key)
    _conv(out, f"{ocb}.f_up.0", key, mid, 1, bias=False)
    _bn(out, f"{ocb}.f_up.1.0", mid)
    _conv(out, f"{prefix}ocr_distri_head.conv_bn_dropout.0", 2 * mid, mid, 1, bias=False)
    _bn(out, f"{prefix}ocr_distri_head.conv_bn_dropout.1.0", mid)
    _conv(out, f"{prefix}cls_head", mid, 1, 1)
    _conv(out, f"{prefix}aux_head.0", last, last, 1)
    _bn(out, f"{prefix}aux_head.1", last)
    _conv(out, f"{prefix}aux_head.3", last, 1, 1)
    _conv(out, "maps_transform.0", 3, 16, 1)
    _conv(out, "maps_transform.2", 16, 64, 3)
    out["maps_transform.3.scale"] = (1,)
    return out


def clickseg_hrnet_layout(width: int, ocr_width: int, small: bool) -> Layout:
    out = hrnet_ocr_layout(width, ocr_width, small)
    _refine_layer(out, 2 * ocr_width, gate=False)
    return out


# ----------------------------------------------------------------------------- helpers


def random_state(layout: Layout, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".scale"):
            state[key] = torch.full(shape, -0.07)  # the official ScaleLayer uses |scale|
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:]) if key.endswith(".weight") else shape[-1]
            state[key] = torch.randn(shape, generator=g) / math.sqrt(max(fan_in, 1))
        elif key.endswith(".weight"):  # BatchNorm / LayerNorm / GroupNorm scales
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def save_official(path: Path, state: dict[str, torch.Tensor], params: dict | None = None) -> Path:
    """Write as the official trainers do: ``{"state_dict": ..., "config": model._config}`` (or a bare dict)."""
    obj: object = state if params is None else {
        "state_dict": state,
        "config": {"class": "isegm.model.Model", "params": {k: {"type": "builtin", "value": v, "specified": True}
                                                            for k, v in params.items()}},
    }
    torch.save(obj, path)
    return path


def check_mapping(model: torch.nn.Module, report, official: dict[str, torch.Tensor], unused: tuple[str, ...]) -> None:
    """Every official key mapped or known unused, every finecut tensor filled from the file."""
    assert set(report.pairs.values()) | set(report.unused) == set(official)
    assert not set(report.pairs.values()) & set(report.unused)
    assert all(k.startswith(unused) for k in report.unused), sorted(report.unused)
    finecut_state = model.state_dict()
    assert set(report.pairs) == set(finecut_state) and not report.filled
    for fk, ok in report.pairs.items():
        value = official[ok]
        if fk == "backbone.pos_embed":
            value = value[:, 1:].reshape(finecut_state[fk].shape)
        elif fk.endswith("net.3.scale"):
            value = value.abs().reshape(())
        assert torch.equal(finecut_state[fk], value.to(finecut_state[fk].dtype)), (fk, ok)


def roundtrip_outputs(tmp_path: Path, model: torch.nn.Module, doc: dict, run) -> None:
    """Outputs identical after finecut's save_checkpoint / load_checkpoint."""
    json_path, _ = save_checkpoint(tmp_path / "roundtrip", model, doc["model"],
                                   {"engine": doc["engine"], "pipeline": doc["pipeline"]})
    again, doc2 = load_checkpoint(json_path)
    assert doc2["model"] == doc["model"] and doc2["engine"] == doc["engine"]
    with torch.no_grad():
        first, second = run(model), run(again)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.isfinite(first[key]).all(), key
        assert torch.equal(first[key], second[key]), key


def _inputs(h: int, w: int, channels: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, h, w, generator=g)
    maps = (torch.rand(1, channels, h, w, generator=g) > 0.9).float()
    return image, maps


def _segment(h: int, w: int):
    image, maps = _inputs(h, w)
    return lambda m: {"logits": m(image, maps)["logits"]}


def _focal(h: int, w: int):
    image, maps = _inputs(h, w)

    def run(m):
        seg = m.segmentor(image, maps)
        ref = m.refiner(image[..., :64, :64], maps[..., :64, :64], seg["logits"][..., :64, :64],
                        seg["features"][..., :16, :16])
        return {"seg": seg["logits"], "refined": ref["logits"]}

    return run


def _predict_twice(engine) -> finecut.Prediction:
    rng = np.random.default_rng(0)
    image = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    predictor = finecut.Predictor(engine)
    predictor.set_image(image)
    first = predictor.predict(clicks=[finecut.Click(60, 40, "positive")])
    second = predictor.predict(clicks=[finecut.Click(60, 40, "positive"), finecut.Click(10, 10, "negative")],
                               previous=first)
    assert second.probs.shape == (96, 128) and np.isfinite(second.probs).all()
    return second


# ----------------------------------------------------------------------------- SimpleClick


def test_simpleclick_xtiny_through_the_public_api(tmp_path: Path) -> None:
    embed, depth, patch, neck, channels = SIMPLECLICK_RELEASES["xtiny"]
    layout = simpleclick_layout(embed, depth, patch, 448, neck, channels)
    state = random_state(layout)
    path = save_official(tmp_path / "cocolvis_vit_xtiny.pth", state,
                         {"with_prev_mask": True, "norm_radius": 5, "backbone_params": {"img_size": (448, 448)}})
    model, doc, report = load_official(path, arch="simpleclick-xtiny")
    check_mapping(model, report, state, SIMPLECLICK_UNUSED)
    assert doc["model"]["global_attn_indexes"] == [1, 3, 5, 7] and doc["model"]["window_size"] == 14
    assert doc["engine"] == "simpleclick" and doc["pipeline"]["target_size"] == 448 and doc["pipeline"]["square_input"]
    roundtrip_outputs(tmp_path, model, doc, _segment(96, 160))
    converted = finecut.load_model(tmp_path / "roundtrip.json")  # the finecut checkpoint keeps the engine options
    assert converted.options["square_input"] and converted.options["target_size"] == 448

    engine = finecut.load_model(f"simpleclick-xtiny:checkpoint={path},threads=1")
    assert engine.options["target_size"] == 448 and not engine.options["progressive_merge"]
    assert torch.equal(engine.net.prompt_embed.proj.weight, state["patch_embed_coords.proj.weight"])
    engine.options["target_size"] = 224  # keep the test fast
    _predict_twice(engine)
    assert finecut.load_model(path, arch="simpleclick").net.config.depth == 8  # family only: variant from weights
    assert finecut.load_model(path, target_size=224).options["target_size"] == 224  # .pth alone: detected


def test_simpleclick_vit_b_full_and_upsample_x4(tmp_path: Path) -> None:
    embed, depth, patch, neck, channels = SIMPLECLICK_RELEASES["b"]
    state = random_state(simpleclick_layout(embed, depth, patch, 448, neck, channels))
    path = save_official(tmp_path / "cocolvis_vit_base.pth", state)  # bare state dict, no config
    engine = finecut.load_model(path, arch="simpleclick-b")
    model = engine.net
    assert model.config.global_attn_indexes == (5, 11)  # official: groups of 6 blocks for ViT-B
    assert model.backbone.blocks[0].attn.num_heads == 12 and model.backbone.pos_embed.shape == (1, 28, 28, 768)
    _, doc, report = convert_official(state, {}, "simpleclick-b", path)  # the same mapping, without a second read
    check_mapping(model, report, state, SIMPLECLICK_UNUSED)
    roundtrip_outputs(tmp_path, model, doc, _segment(64, 224))
    del state, model, engine

    x4 = random_state(simpleclick_layout(160, 4, 16, 224, (96, 192, 288, 384), 64, upsample="x4"))
    model, doc, report = load_official(save_official(tmp_path / "x4.pth", x4))
    assert doc["model"]["head_upsample"] == "x4" and model.feature_stride == 1
    check_mapping(model, report, x4, ("backbone.cls_token", "backbone.fc_norm.", "backbone.head."))
    roundtrip_outputs(tmp_path / "x4", model, doc, _segment(64, 96))


@pytest.mark.parametrize("variant", ["l", "h"])
def test_simpleclick_large_and_huge_key_mapping_on_meta_tensors(variant: str) -> None:
    embed, depth, patch, neck, channels = SIMPLECLICK_RELEASES[variant]
    layout = simpleclick_layout(embed, depth, patch, 448, neck, channels)
    state = {k: torch.empty(shape, device="meta") for k, shape in layout.items()}
    plan = plan_official(state, {}, f"simpleclick-{variant}")
    with torch.device("meta"):
        model = build_model(plan.model_config)
    mapped, report = convert_state(state, plan, model.state_dict())
    target = model.state_dict()
    assert set(mapped) == set(target) and all(mapped[k].shape == target[k].shape for k in target)
    assert set(report.pairs.values()) | set(report.unused) == set(state)
    assert all(k.startswith(SIMPLECLICK_UNUSED) for k in report.unused)
    assert plan.model_config["global_attn_indexes"] == ([5, 11, 17, 23] if variant == "l" else [7, 15, 23, 31])
    assert plan.model_config["window_size"] == (14 if variant == "l" else 16)
    assert plan.model_config["img_size"] == [448, 448]
    assert plan.model_config["patch_size"] == [patch, patch] and plan.model_config["num_heads"] == 16
    assert (plan.model_config, plan.pipeline) == released_config(variant)  # what the latency benchmark builds


# ----------------------------------------------------------------------------- FocalClick (ClickSEG)


def test_focalclick_hrnet32_key_mapping_on_meta_tensors() -> None:
    layout = clickseg_hrnet_layout(32, 128, small=False)
    state = {k: torch.empty(shape, device="meta") for k, shape in layout.items()}
    plan = plan_official(state, {}, "focalclick-hrnet32-s2")
    with torch.device("meta"):
        model = build_model(plan.model_config)
    mapped, report = convert_state(state, plan, model.state_dict())
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert set(report.pairs.values()) == set(state) and not report.unused
    assert plan.layout == "focalclick-hrnet32-s2" and plan.model_config["head_channels"] == 256


SEGFORMER_UNUSED = ("maps_transform.", "refiner.feature_gate.")


@pytest.mark.parametrize("version", ["b0", "b3"])
def test_focalclick_segformer_s1_and_s2(tmp_path: Path, version: str) -> None:
    state = random_state(clickseg_segformer_layout(version), seed=3)
    s1 = save_official(tmp_path / f"segformer{version.upper()}_S1_cclvs.pth", state)
    model, doc, report = load_official(s1)  # stage from the file name
    check_mapping(model, report, state, SEGFORMER_UNUSED)
    assert doc["model"]["backbone"] == f"mit_{version}" and doc["model"]["segmentor_options"]["input_scale"] == 0.5
    assert doc["pipeline"]["click_radius"] == 3.0 and doc["pipeline"]["target_size"] == 256
    roundtrip_outputs(tmp_path / "s1", model, doc, _focal(128, 128))

    s2 = save_official(tmp_path / "plain.pth", state, {"pipeline_version": "s2", "model_version": version})
    model2, doc2, _ = load_official(s2)  # stage from the checkpoint's config
    assert doc2["model"]["segmentor_options"]["input_scale"] == 1.0 and doc2["pipeline"]["click_radius"] == 5.0
    if version == "b0":
        engine = finecut.load_model(f"focalclick-segformer-b0-s2:checkpoint={s2}")
        assert engine.refiner is not None and engine.options["square_input"]
        _predict_twice(engine)
        with pytest.raises(FinecutError, match="S1 or S2"):
            load_official(save_official(tmp_path / "unnamed.pth", state))
        with pytest.raises(FinecutError, match="not FocalClick-segformer-b3"):
            load_official(s2, arch="focalclick-segformer-b3-s2")


def test_focalclick_hrnet18s_s1_and_s2(tmp_path: Path) -> None:
    state = random_state(clickseg_hrnet_layout(18, 48, small=True), seed=4)
    path = save_official(tmp_path / "hrnet18s_S1_cclvs.pth", state, {"pipeline_version": "s1", "use_leaky_relu": True})
    engine = finecut.load_model(path, arch="focalclick-hrnet18s")
    model = engine.net
    _, doc, report = load_official(path)
    check_mapping(model, report, state, ())
    assert doc["model"]["head_channels"] == 96 and doc["pipeline"]["click_radius"] == 2.0
    assert doc["model"]["segmentor_options"]["backbone_options"]["stem_layers"] == 1
    assert model.segmentor.click_fusion.net[3].scale.item() == pytest.approx(0.07)
    roundtrip_outputs(tmp_path, model, doc, _focal(96, 128))
    _predict_twice(engine)
    model2, doc2, _ = load_official(path, arch="focalclick-hrnet18s-s2")  # the name wins over the config
    assert doc2["model"]["segmentor_options"]["input_scale"] == 1.0


# ----------------------------------------------------------------------------- RITM


@pytest.mark.parametrize(("variant", "width", "ocr", "small"),
                         [("hrnet18", 18, 64, False), ("hrnet32", 32, 128, False), ("hrnet18s", 18, 48, True)])
def test_ritm_hrnet(tmp_path: Path, variant: str, width: int, ocr: int, small: bool) -> None:
    state = random_state(hrnet_ocr_layout(width, ocr, small), seed=5)
    path = save_official(tmp_path / f"coco_lvis_{variant}_itermask.pth", state,
                         {"width": width, "ocr_width": ocr, "small": small, "use_leaky_relu": True})
    model, doc, report = load_official(path, arch=f"ritm-{variant}")
    check_mapping(model, report, state, ())
    assert doc["engine"] == "ritm" and doc["model"]["arch"] == "focalclick_segmentor"
    roundtrip_outputs(tmp_path, model, doc, _segment(80, 112))
    if variant == "hrnet18":
        engine = finecut.load_model(f"ritm:checkpoint={path}")
        assert engine.refiner is None and not engine.options["progressive_merge"]
        assert engine.options["target_size"] == 400
        _predict_twice(finecut.load_model(f"ritm-hrnet18:checkpoint={path},target_size=128"))


# ----------------------------------------------------------------------------- errors and reading


def test_errors_name_the_offending_keys(tmp_path: Path) -> None:
    embed, _, patch, neck, channels = SIMPLECLICK_RELEASES["xtiny"]
    good = random_state(simpleclick_layout(embed, 4, patch, 224, neck, channels))

    extra = dict(good, **{"backbone.dist_token": torch.zeros(1, 1, 160)})
    with pytest.raises(FinecutError, match=r"no finecut counterpart: backbone\.dist_token"):
        load_official(save_official(tmp_path / "extra.pth", extra))
    extra = dict(good, **{"backbone.blocks.1.attn.extra_bias": torch.zeros(3)})
    with pytest.raises(FinecutError, match=r"model lacks: backbone\.blocks\.1\.attn\.extra_bias"):
        load_official(save_official(tmp_path / "extra.pth", extra))
    missing = {k: v for k, v in good.items() if k != "backbone.blocks.3.mlp.fc2.bias"}
    with pytest.raises(FinecutError, match=r"missing from the checkpoint: backbone\.blocks\.3\.mlp\.fc2\.bias"):
        load_official(save_official(tmp_path / "missing.pth", missing))
    wrong = dict(good, **{"backbone.blocks.2.attn.proj.weight": torch.zeros(160, 80)})
    with pytest.raises(FinecutError, match=r"shape mismatch.*backbone\.blocks\.2\.attn\.proj\.weight \(160, 80\)"):
        load_official(save_official(tmp_path / "wrong.pth", wrong))
    with pytest.raises(FinecutError, match="names ritm, but the weights are a simpleclick"):
        finecut.load_model(save_official(tmp_path / "ok.pth", good), arch="ritm-hrnet18")
    with pytest.raises(FinecutError, match="not SimpleClick-b"):
        finecut.load_model(tmp_path / "ok.pth", arch="simpleclick-b")
    with pytest.raises(FinecutError, match="not an official"):
        load_official(save_official(tmp_path / "other.pth", {"layer.weight": torch.zeros(2, 2)}))
    with pytest.raises(FinecutError, match="not found"):
        finecut.load_model("simpleclick:checkpoint=/nonexistent/x.pth")
    with pytest.raises(FinecutError, match="unknown official architecture"):
        finecut.load_model(tmp_path / "ok.pth", arch="segment-anything")


def test_arch_names_and_checkpoint_with_unimportable_config_classes(tmp_path: Path) -> None:
    for name in OFFICIAL_ARCHS:
        parse_arch(name)
    assert parse_arch("FocalClick-SegFormer-B3-S2").stage == "s2"
    assert parse_arch("simpleclick-vit-h").variant == "h"

    # SimpleClick's config pickles an instance of its own loss class; that code base is not installed here.
    fake = types.ModuleType("isegm_missing_codebase")

    class CrossEntropyLoss:
        def __init__(self) -> None:
            self.weight = 1.0

    CrossEntropyLoss.__module__ = fake.__name__
    CrossEntropyLoss.__qualname__ = "CrossEntropyLoss"
    fake.CrossEntropyLoss = CrossEntropyLoss
    sys.modules[fake.__name__] = fake
    embed, _, patch, neck, channels = SIMPLECLICK_RELEASES["xtiny"]
    state = random_state(simpleclick_layout(embed, 4, patch, 224, neck, channels))
    path = tmp_path / "with_loss.pth"
    try:
        save_official(path, state, {"head_params": {"loss_decode": CrossEntropyLoss(), "channels": channels}})
    finally:
        del sys.modules[fake.__name__]
    model, doc, _ = load_official(path)
    assert doc["model"]["depth"] == 4 and model.config.img_size == (224, 224)


def test_shipped_checkpoints_still_load_strictly_with_their_layouts() -> None:
    from finecut.registry import WEIGHTS_DIR

    for name in ("focalclick-lite0", "ntclick"):
        model, doc = load_checkpoint(WEIGHTS_DIR / f"{name}.json")  # strict=True inside
        assert "segmentor_options" not in doc["model"] and "refiner_options" not in doc["model"]
    lite = load_checkpoint(WEIGHTS_DIR / "focalclick-lite0.json")[0]
    assert lite.refiner.click_channels is None and not lite.refiner.project_first
    assert lite.segmentor.input_scale == 1.0 and lite.segmentor.click_fusion is not None


def test_convert_official_accepts_an_in_memory_state_dict() -> None:
    state = random_state(hrnet_ocr_layout(18, 48, small=True), seed=6)
    model, doc, report = convert_official(state, {}, "ritm")
    assert report.layout == "ritm-hrnet18s" and doc["source"]["official"] == "ritm-hrnet18s"
    assert "mapped" in report.summary()
