"""SimpleClick, plain-ViT blocks, MiT / HRNet segmentor backbones and their heads (fast, CPU, small inputs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from finecut.errors import FinecutError
from finecut.models.backbones import BACKBONES, HRNetW18Small, MixVisionTransformer, build_backbone
from finecut.models.heads import DEFAULT_HEADS, HEADS, OCRHead, SegFormerHead, build_head
from finecut.models.registry import build_model, list_models
from finecut.models.simpleclick import SimpleClick, build_simpleclick
from finecut.models.vit import (
    Block,
    VisionTransformer,
    quarter_global_indexes,
    resize_pos_embed,
    window_partition,
    window_unpartition,
)


def _count(module: nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _inputs(b: int, h: int, w: int, channels: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, h, w, generator=g)
    prompts = torch.zeros(b, channels, h, w)
    prompts[:, 1, h // 3 : h // 3 + 5, w // 3 : w // 3 + 5] = 1.0
    return image, prompts


def _tiny_simpleclick(**kw: object) -> SimpleClick:
    torch.manual_seed(0)
    return build_simpleclick("xtiny", img_size=64, **kw)


def _assert_all_grads_finite(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


# --------------------------------------------------------------------------------------------------- SimpleClick


@pytest.mark.parametrize("size", [(64, 64), (72, 88), (50, 37)])
def test_simpleclick_xtiny_output_shapes(size: tuple[int, int]) -> None:
    model = _tiny_simpleclick().eval()
    h, w = size
    image, prompts = _inputs(2, h, w)
    with torch.no_grad():
        out = model(image, prompts)
    assert out["logits"].shape == (2, 1, h, w)
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16  # padded to the patch size, features at 1/4 of that
    assert out["features"].shape == (2, model.feature_channels, ph // model.feature_stride, pw // 4)
    assert torch.isfinite(out["logits"]).all()
    assert model.prompt_channels == 3


def test_simpleclick_backward_reaches_every_parameter() -> None:
    model = _tiny_simpleclick().train()
    image, prompts = _inputs(2, 64, 48)
    out = model(image, prompts)
    (out["logits"].mean() + out["features"].mean()).backward()
    _assert_all_grads_finite(model)


def test_simpleclick_prompts_change_the_output() -> None:
    model = _tiny_simpleclick().eval()
    image, prompts = _inputs(1, 64, 64)
    other = prompts.clone()
    other[:, 1] = 0.0
    other[:, 2, 40:45, 40:45] = 1.0  # a negative click elsewhere instead of the positive one
    prev = prompts.clone()
    prev[:, 0, 10:50, 10:50] = 1.0  # same clicks, a previous mask
    with torch.no_grad():
        a = model(image, prompts)["logits"]
        b = model(image, other)["logits"]
        c = model(image, prev)["logits"]
        a2 = model(image, prompts)["logits"]
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-4
    assert (a - c).abs().max() > 1e-4


def test_simpleclick_bad_prompt_channels_raise() -> None:
    model = _tiny_simpleclick()
    image, prompts = _inputs(1, 32, 32, channels=4)
    with pytest.raises(FinecutError, match="prompt maps"):
        model(image, prompts)
    with pytest.raises(FinecutError, match="do not match"):
        model(image, torch.zeros(1, 3, 16, 32))


def test_simpleclick_global_blocks_every_quarter() -> None:
    assert quarter_global_indexes(12) == (2, 5, 8, 11)
    assert quarter_global_indexes(8) == (1, 3, 5, 7)
    assert quarter_global_indexes(24) == (5, 11, 17, 23)
    assert quarter_global_indexes(32) == (7, 15, 23, 31)
    model = _tiny_simpleclick(window_size=3)
    windows = [block.window_size for block in model.backbone.blocks]
    assert windows == [3, 0, 3, 0, 3, 0, 3, 0]


def test_pos_embed_resize_non_square_non_window_multiple() -> None:
    # img_size 64 -> 4x4 stored grid; a 80x48 input gives a 5x3 grid, not a multiple of the 3x3 windows.
    model = _tiny_simpleclick(window_size=3).eval()
    assert tuple(model.backbone.pos_embed.shape) == (1, 4, 4, 160)
    resized = resize_pos_embed(model.backbone.pos_embed, (5, 3))
    assert resized.shape == (1, 5, 3, 160)
    assert resize_pos_embed(model.backbone.pos_embed, (4, 4)) is model.backbone.pos_embed
    constant = torch.full((1, 4, 4, 2), 0.7)
    assert torch.allclose(resize_pos_embed(constant, (7, 3)), torch.full((1, 7, 3, 2), 0.7), atol=1e-6)
    image, prompts = _inputs(1, 80, 48)
    with torch.no_grad():
        out = model(image, prompts)
        tokens = model.backbone(image, model.prompt_embed(prompts))
    assert out["logits"].shape == (1, 1, 80, 48)
    assert tokens.shape == (1, 160, 5, 3)
    assert torch.isfinite(out["logits"]).all()


def test_window_partition_roundtrip_with_padding() -> None:
    x = torch.randn(2, 5, 7, 4)
    windows, padded = window_partition(x, 3)
    assert padded == (6, 9) and windows.shape == (2 * 2 * 3, 3, 3, 4)
    assert torch.equal(window_unpartition(windows, 3, padded, (5, 7)), x)


def test_window_attention_ignores_padding_tokens() -> None:
    """A windowed block on a padded grid equals a global block run on each window's real tokens alone."""
    torch.manual_seed(0)
    windowed = Block(16, 2, window_size=3).eval()
    global_block = Block(16, 2, window_size=0).eval()
    global_block.load_state_dict(windowed.state_dict())
    x = torch.randn(1, 5, 4, 16)
    with torch.no_grad():
        y = windowed(x)
        for r0, r1 in ((0, 3), (3, 5)):
            for c0, c1 in ((0, 3), (3, 4)):
                expected = global_block(x[:, r0:r1, c0:c1])
                assert torch.allclose(y[:, r0:r1, c0:c1], expected, atol=1e-5)


def test_relative_position_variant_trains() -> None:
    model = _tiny_simpleclick(use_rel_pos=True, window_size=3).train()
    names = [n for n, _ in model.named_parameters() if "rel_pos" in n]
    assert len(names) == 16
    assert model.backbone.blocks[0].attn.rel_pos_h.shape == (5, 40)  # window 3 -> 2*3-1 offsets, head dim 40
    assert model.backbone.blocks[1].attn.rel_pos_h.shape == (7, 40)  # global block: 4x4 grid at img_size 64
    image, prompts = _inputs(2, 80, 48)
    model(image, prompts)["logits"].sum().backward()
    _assert_all_grads_finite(model)


def test_gradient_checkpointing_matches_plain_backward() -> None:
    plain = _tiny_simpleclick(head_dropout=0.0, depth=2).train()
    ckpt = _tiny_simpleclick(head_dropout=0.0, depth=2, grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    image, prompts = _inputs(1, 32, 32)
    plain(image, prompts)["logits"].square().mean().backward()
    ckpt(image, prompts)["logits"].square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4), name


def test_simpleclick_registry_build_and_config_roundtrip() -> None:
    assert "simpleclick" in list_models()
    model = build_model({"arch": "simpleclick", "variant": "xtiny", "img_size": [64, 64], "prompt_channels": 4})
    assert isinstance(model, SimpleClick) and model.prompt_channels == 4
    image, prompts = _inputs(1, 32, 32, channels=4)
    with torch.no_grad():
        assert model.eval()(image, prompts)["logits"].shape == (1, 1, 32, 32)
    config = model.arch_config()
    assert config["arch"] == "simpleclick" and config["embed_dim"] == 160 and config["depth"] == 8
    rebuilt = build_model(config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(FinecutError, match="unknown SimpleClick option"):
        build_model({"arch": "simpleclick", "variant": "xtiny", "embed_dims": 3})
    with pytest.raises(FinecutError, match="variant"):
        build_model({"arch": "simpleclick", "variant": "giant"})


def test_simpleclick_parameter_counts() -> None:
    assert 3.5 < _count(_tiny_simpleclick()) < 4.0  # paper: 3.72M
    expected = {"b": (85.0, 87.5), "l": (300.0, 307.0), "h": (625.0, 640.0)}  # ViT backbone: ~86M / ~304M / ~632M
    for variant, (low, high) in expected.items():
        with torch.device("meta"):
            model = build_simpleclick(variant)
        assert low < _count(model.backbone) < high, variant
        assert model.backbone.blocks[0].attn.num_heads == {"b": 12, "l": 16, "h": 16}[variant]
    assert model.backbone.patch_size == (14, 14)  # ViT-H uses 14-px patches
    assert model.prompt_embed.proj.kernel_size == (14, 14) and model.prompt_embed.proj.stride == (14, 14)


def test_simpleclick_loads_mae_style_weights(tmp_path) -> None:
    torch.manual_seed(1)
    source = VisionTransformer(img_size=32, patch_size=16, embed_dim=160, depth=8, num_heads=4)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    grid = state.pop("pos_embed")  # MAE stores (1, 1 + N, C) with a cls token
    state["pos_embed"] = torch.cat([torch.zeros(1, 1, 160), grid.reshape(1, 4, 160)], dim=1)
    state["cls_token"] = torch.zeros(1, 1, 160)
    state["norm.weight"] = torch.ones(160)
    state["patch_embed_coords.proj.weight"] = torch.randn(160, 3, 16, 16)
    path = tmp_path / "mae.pth"
    torch.save({"model": state}, path)

    model = _tiny_simpleclick(prompt_channels=4)
    report = model.load_pretrained(path)
    assert torch.equal(model.backbone.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)
    assert model.backbone.pos_embed.shape == (1, 4, 4, 160)
    assert torch.allclose(model.backbone.pos_embed, resize_pos_embed(source.pos_embed, (4, 4)))
    w = model.prompt_embed.proj.weight
    assert torch.equal(w[:, :3], state["patch_embed_coords.proj.weight"]) and not w[:, 3].any()
    assert {"cls_token", "norm.weight"} <= set(report.unexpected)
    assert any(k.startswith("neck.") for k in report.missing)

    other = tmp_path / "other.safetensors"
    save_file({"layer.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(FinecutError, match="no transformer block"):
        model.load_pretrained(other)
    with pytest.raises(FinecutError, match="not found"):
        model.load_pretrained(tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------------- segmentor backbones


def test_backbone_and_head_registries() -> None:
    assert {"mit_b0", "mit_b3", "hrnet18s"} <= set(BACKBONES)
    assert {"segformer", "ocr"} <= set(HEADS)
    for backbone, (head, kwargs) in DEFAULT_HEADS.items():
        assert backbone in BACKBONES and head in HEADS
        with torch.device("meta"):
            decoder = build_head(head, build_backbone(backbone).out_channels, **kwargs)
        assert decoder.out_channels == {"mit_b0": 256, "mit_b3": 512, "hrnet18s": 96}[backbone]
    with pytest.raises(FinecutError, match="unknown backbone"):
        build_backbone("resnet50")
    with pytest.raises(FinecutError, match="unknown head"):
        build_head("aspp", [8, 16])
    with pytest.raises(FinecutError, match="bad arguments"):
        build_backbone("mit_b0", depth=3)


def test_mit_b0_interface_and_shapes() -> None:
    torch.manual_seed(0)
    net = build_backbone("mit_b0").eval()
    assert isinstance(net, MixVisionTransformer)
    assert (net.stem_channels, net.stem_stride) == (32, 4)
    assert net.out_channels == [32, 64, 160, 256] and net.out_strides == [4, 8, 16, 32]
    rgb = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        stem = net.forward_stem(rgb)
        feats = net.forward_body(stem + 0.1)
    assert stem.shape == (2, 32, 16, 24)
    for f, c, s in zip(feats, net.out_channels, net.out_strides):
        assert f.shape == (2, c, 64 // s, 96 // s)
    assert [len(net.block1), len(net.block2), len(net.block3), len(net.block4)] == [2, 2, 2, 2]
    assert [net.block1[0].attn.num_heads, net.block3[0].attn.num_heads] == [1, 5]
    assert [net.block1[0].attn.sr_ratio, net.block4[0].attn.sr_ratio] == [8, 1]


def test_mit_parameter_counts() -> None:
    assert 3.2 < _count(build_backbone("mit_b0")) < 3.45  # ~3.3M
    with torch.device("meta"):
        b3 = build_backbone("mit_b3")
    assert 43.0 < _count(b3) < 45.5  # ~44M
    assert [len(b3.block1), len(b3.block2), len(b3.block3), len(b3.block4)] == [3, 4, 18, 3]
    assert b3.out_channels == [64, 128, 320, 512]


def test_hrnet18s_interface_and_shapes() -> None:
    torch.manual_seed(0)
    net = build_backbone("hrnet18s").eval()
    assert isinstance(net, HRNetW18Small)
    assert (net.stem_channels, net.stem_stride) == (64, 4)
    assert net.out_channels == [18, 36, 72, 144] and net.out_strides == [4, 8, 16, 32]
    assert [len(net.stage2), len(net.stage3), len(net.stage4)] == [1, 3, 2]
    assert len(net.stage3[0].branches[0]) == 2 and len(net.layer1) == 2
    rgb = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        stem = net.forward_stem(rgb)
        feats = net.forward_body(stem)
    assert stem.shape == (1, 64, 16, 24)
    for f, c, s in zip(feats, net.out_channels, net.out_strides):
        assert f.shape == (1, c, 64 // s, 96 // s)
    assert 3.6 < _count(net) < 4.1  # HRNet-W18-small-v2 without classifier: ~3.9M

    ritm = HRNetW18Small(stem_layers=1).eval()
    ritm.load_state_dict(net.state_dict())
    with torch.no_grad():
        stem2 = ritm.forward_stem(rgb)
        assert stem2.shape == (1, 64, 32, 48) and ritm.stem_stride == 2
        assert torch.allclose(ritm.forward_body(stem2)[0], feats[0], atol=1e-5)


@pytest.mark.parametrize(("backbone", "head", "kwargs"), [
    ("mit_b0", "segformer", {"embed_dim": 64}),
    ("hrnet18s", "ocr", {"ocr_mid_channels": 32, "ocr_key_channels": 16}),
])
def test_segmentor_backbone_with_head_trains(backbone: str, head: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    net = build_backbone(backbone)
    decoder = build_head(head, net.out_channels, **kwargs)
    fusion = nn.Conv2d(3, net.stem_channels, net.stem_stride, net.stem_stride)  # stand-in for the click fusion
    rgb, prompts = _inputs(2, 32, 48)
    x = net.forward_stem(rgb) + fusion(prompts)
    logits, features = decoder(net.forward_body(x))
    assert logits.shape == (2, 1, 8, 12)
    assert features.shape == (2, decoder.out_channels, 8, 12)
    (logits.mean() + features.mean()).backward()
    for module in (net, decoder, fusion):
        _assert_all_grads_finite(module)


def test_ocr_head_aux_output_and_defaults() -> None:
    head = OCRHead([18, 36, 72, 144]).eval()
    assert head.out_channels == 96  # RITM hrnet18s: ocr_width 48
    assert head.ocr_distri_head.object_context_block.key_channels == 48
    assert OCRHead([18, 36], 64).ocr_distri_head.object_context_block.key_channels == 32
    feats = [torch.randn(1, c, 32 // s, 32 // s) for c, s in zip([18, 36, 72, 144], [1, 2, 4, 8])]
    with torch.no_grad():
        logits, features, aux = head(feats, return_aux=True)
    assert logits.shape == aux.shape == (1, 1, 32, 32) and features.shape == (1, 96, 32, 32)
    assert 0.2 < _count(head) < 0.4
    seg = SegFormerHead([32, 64, 160, 256], embed_dim=256)
    assert 0.35 < _count(seg) < 0.45 and seg.out_channels == 256
    with pytest.raises(FinecutError, match="expects 4 feature maps"):
        seg(feats[:2])


def test_backbones_load_official_style_checkpoints(tmp_path) -> None:
    torch.manual_seed(0)
    src = MixVisionTransformer("b0")
    state = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    state["decode_head.linear_pred.weight"] = torch.zeros(1, 256, 1, 1)
    torch.save({"state_dict": state}, tmp_path / "segformer.pth")
    dst = build_backbone("mit_b0", pretrained=tmp_path / "segformer.pth")
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), name

    hr = HRNetW18Small()
    hr_state = {f"feature_extractor.{k}": v.contiguous() for k, v in hr.state_dict().items()}
    hr_state["feature_extractor.aux_head.0.weight"] = torch.zeros(270, 270, 1, 1)
    save_file(hr_state, str(tmp_path / "ritm.safetensors"))
    loaded = HRNetW18Small()
    report = loaded.load_pretrained(tmp_path / "ritm.safetensors")
    assert torch.equal(loaded.stage4[1].fuse_layers[3][0][2][0].weight, hr.stage4[1].fuse_layers[3][0][2][0].weight)
    assert report.unexpected == ["aux_head.0.weight"] and not report.missing

    with pytest.raises(FinecutError, match="another architecture"):
        HRNetW18Small().load_pretrained(tmp_path / "segformer.pth")
    with pytest.raises(FinecutError, match="not found"):
        build_backbone("mit_b3", pretrained=tmp_path / "nope.pth")
