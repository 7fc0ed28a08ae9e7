"""FocalClick-XL's networks (SAM ViT + adapters, Lite0 context, Object-Net with prompting layers, Detail-Net), the alpha
losses and the synthetic alpha composites. Fast: tiny configs and small inputs on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finecut.errors import FinecutError
from finecut.model_inputs import input_spec
from finecut.models.checkpoint import (
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from finecut.models.detail_net import (
    DetailNet,
    compose_alpha,
    near_boundary,
    trimap_from_probs,
    trimap_one_hot,
)
from finecut.models.focalclick_xl import (
    FORMS,
    XL_PROMPT_LAYOUT,
    ContextLite0Encoder,
    FocalClickXLNet,
    context_input_geometry,
    init_object_from_focalclick,
    parameter_table,
)
from finecut.models.registry import build_model, list_models
from finecut.models.sam_vit import (
    SamViTAdapterEncoder,
    SamViTConfig,
    load_sam_image_encoder,
    sam_vit_config,
)
from finecut.training.alpha_losses import (
    alpha_composition_loss,
    alpha_gradient_loss,
    alpha_l1,
    alpha_loss,
    alpha_mse,
)
from finecut.training.alpha_synth import KINDS, render_alpha_composite

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "finecut" / "weights" / "focalclick-lite0-v2"

TINY_SAM = {"img_size": 128, "patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 4, "window_size": 4,
            "global_attn_indexes": (1,), "out_channels": 32, "adapter_dim": 8}
TINY_XL = {"arch": "focalclick_xl",
           "context_net": {"type": "sam_vit", **TINY_SAM, "global_attn_indexes": [1]},
           "detail_net": {"stages": [[1, 8, 1, 1], [4, 16, 1, 2], [4, 24, 1, 2]], "stem_channels": 8,
                          "decoder": [16, 12, 8]}}


# ------------------------------------------------------------------------------------------------- SAM ViT + adapters


def sam_state_dict(cfg: SamViTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised state dict in the key names and shapes of segment_anything's ``Sam``: the
    ``image_encoder`` (``ImageEncoderViT``) written out from its layer list, plus a few prompt-encoder / mask-decoder
    tensors that the Context-Net must not use."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.05

    d, grid, heads = cfg.embed_dim, cfg.img_size // cfg.patch_size, cfg.num_heads
    head_dim, out = d // heads, cfg.out_channels
    state = {"patch_embed.proj.weight": rnd(d, 3, cfg.patch_size, cfg.patch_size),
             "patch_embed.proj.bias": rnd(d), "pos_embed": rnd(1, grid, grid, d)}
    for i in range(cfg.depth):
        size = grid if i in cfg.global_attn_indexes else cfg.window_size
        p = f"blocks.{i}."
        state.update({
            p + "norm1.weight": 1 + rnd(d), p + "norm1.bias": rnd(d),
            p + "attn.qkv.weight": rnd(3 * d, d), p + "attn.qkv.bias": rnd(3 * d),
            p + "attn.proj.weight": rnd(d, d), p + "attn.proj.bias": rnd(d),
            p + "attn.rel_pos_h": rnd(2 * size - 1, head_dim), p + "attn.rel_pos_w": rnd(2 * size - 1, head_dim),
            p + "norm2.weight": 1 + rnd(d), p + "norm2.bias": rnd(d),
            p + "mlp.lin1.weight": rnd(4 * d, d), p + "mlp.lin1.bias": rnd(4 * d),
            p + "mlp.lin2.weight": rnd(d, 4 * d), p + "mlp.lin2.bias": rnd(d),
        })
    state.update({"neck.0.weight": rnd(out, d, 1, 1), "neck.1.weight": 1 + rnd(out), "neck.1.bias": rnd(out),
                  "neck.2.weight": rnd(out, out, 3, 3), "neck.3.weight": 1 + rnd(out), "neck.3.bias": rnd(out)})
    full = {f"image_encoder.{k}": v for k, v in state.items()}
    full["prompt_encoder.point_embeddings.0.weight"] = rnd(1, out)
    full["mask_decoder.iou_token.weight"] = rnd(1, out)
    return full


def sam_reference_forward(state: dict[str, torch.Tensor], cfg: SamViTConfig, x: torch.Tensor) -> torch.Tensor:
    """SAM's ``ImageEncoderViT.forward`` written out directly (explicit softmax attention, SAM's
    ``add_decomposed_rel_pos``), for inputs of ``img_size``."""
    s = {k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")}
    f = torch.nn.functional
    x = f.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=cfg.patch_size)
    x = x.permute(0, 2, 3, 1) + s["pos_embed"]
    heads = cfg.num_heads

    def rel(q_size: int, table: torch.Tensor) -> torch.Tensor:
        coords = torch.arange(q_size)[:, None] - torch.arange(q_size)[None, :] + (q_size - 1)
        return table[coords]

    def attention(t: torch.Tensor, p: str) -> torch.Tensor:
        b, h, w, c = t.shape
        qkv = f.linear(t, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"])
        qkv = qkv.reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4).reshape(3, b * heads, h * w, -1)
        q, k, v = qkv.unbind(0)
        attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
        rq = q.reshape(b * heads, h, w, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", rq, rel(h, s[p + "attn.rel_pos_h"]))
        rel_w = torch.einsum("bhwc,wkc->bhwk", rq, rel(w, s[p + "attn.rel_pos_w"]))
        attn = (attn.view(b * heads, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :])
        attn = attn.view(b * heads, h * w, h * w).softmax(-1)
        out = (attn @ v).view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return f.linear(out, s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])

    for i in range(cfg.depth):
        p = f"blocks.{i}."
        shortcut = x
        t = f.layer_norm(x, (x.shape[-1],), s[p + "norm1.weight"], s[p + "norm1.bias"], 1e-6)
        ws = 0 if i in cfg.global_attn_indexes else cfg.window_size
        if ws:
            b, h, w, c = t.shape
            ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
            t = f.pad(t, (0, 0, 0, pw, 0, ph))
            hp, wp = h + ph, w + pw
            t = t.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)
            t = attention(t, p)
            t = t.view(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
            t = t[:, :h, :w]
        else:
            t = attention(t, p)
        x = shortcut + t
        y = f.layer_norm(x, (x.shape[-1],), s[p + "norm2.weight"], s[p + "norm2.bias"], 1e-6)
        y = f.linear(f.gelu(f.linear(y, s[p + "mlp.lin1.weight"], s[p + "mlp.lin1.bias"])),
                     s[p + "mlp.lin2.weight"], s[p + "mlp.lin2.bias"])
        x = x + y

    def ln2d(t: torch.Tensor, p: str) -> torch.Tensor:
        u = t.mean(1, keepdim=True)
        var = (t - u).pow(2).mean(1, keepdim=True)
        return (t - u) / torch.sqrt(var + 1e-6) * s[p + "weight"][:, None, None] + s[p + "bias"][:, None, None]

    x = x.permute(0, 3, 1, 2)
    x = ln2d(f.conv2d(x, s["neck.0.weight"]), "neck.1.")
    return ln2d(f.conv2d(x, s["neck.2.weight"], padding=1), "neck.3.")


def test_sam_encoder_shapes_and_adapters_start_as_identity() -> None:
    torch.manual_seed(0)
    model = SamViTAdapterEncoder(**TINY_SAM).eval()
    assert [b.window_size for b in model.blocks] == [4, 0]
    assert tuple(model.blocks[1].attn.rel_pos_h.shape) == (15, 16)  # global: (2 * 8 - 1, head dim)
    assert tuple(model.blocks[0].attn.rel_pos_h.shape) == (7, 16)  # windowed: (2 * 4 - 1, head dim)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
        odd = model(torch.randn(1, 3, 100, 120))  # padded to 112 x 128
    assert out.shape == (2, 32, 8, 8) and odd.shape == (1, 32, 7, 8)
    assert model.input_size == 128 and model.pad_square and model.stride == 16
    for adapter in model.adapters:
        assert not adapter.up.weight.any() and not adapter.up.bias.any()
    model.freeze_encoder()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("adapters.") for n in trainable)


def test_official_sam_checkpoint_loads_into_the_adapter_encoder(tmp_path: Path) -> None:
    cfg = SamViTConfig(**TINY_SAM)
    state = sam_state_dict(cfg)
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(state, path)
    torch.manual_seed(1)
    model = SamViTAdapterEncoder(cfg).eval()
    adapters_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("adapters.")}
    report = load_sam_image_encoder(model, path)
    loaded = model.state_dict()
    encoder_keys = [k[len("image_encoder."):] for k in state if k.startswith("image_encoder.")]
    assert sorted(report.loaded) == sorted(encoder_keys) == sorted(model.encoder_keys())
    for key in encoder_keys:
        assert torch.equal(loaded[key], state[f"image_encoder.{key}"]), key
    assert report.left_at_init == sorted(adapters_before) and not report.resized
    for key, value in adapters_before.items():
        assert torch.equal(loaded[key], value), key
    assert report.unused == ["mask_decoder.iou_token.weight", "prompt_encoder.point_embeddings.0.weight"]
    # with the adapters at init the encoder computes SAM's image embedding
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(x)
        reference = sam_reference_forward(state, cfg, x)
    assert torch.allclose(ours, reference, atol=1e-4), (ours - reference).abs().max()
    # a trained adapter changes the features
    with torch.no_grad():
        model.adapters[0].up.weight.normal_(0, 0.1)
        assert (model(x) - ours).abs().max() > 1e-3


def test_sam_checkpoint_for_another_input_size_is_resized_and_wrong_width_refused() -> None:
    state = sam_state_dict(SamViTConfig(**TINY_SAM))
    small = SamViTAdapterEncoder(**{**TINY_SAM, "img_size": 64})  # 4x4 grid: pos_embed and global rel-pos resized
    report = load_sam_image_encoder(small, state)
    assert report.resized == ["blocks.1.attn.rel_pos_h", "blocks.1.attn.rel_pos_w", "pos_embed"]
    assert tuple(small.pos_embed.shape) == (1, 4, 4, 64)
    wide = SamViTAdapterEncoder(**{**TINY_SAM, "embed_dim": 96, "num_heads": 4})
    with pytest.raises(FinecutError, match="not a SAM image encoder"):
        load_sam_image_encoder(wide, state)
    with pytest.raises(FinecutError, match="not found"):
        load_sam_image_encoder(small, "/nonexistent/sam_vit_b.pth")


def test_sam_vit_b_has_sams_parameter_count() -> None:
    with torch.device("meta"):
        model = SamViTAdapterEncoder(sam_vit_config("b", adapter_dim=0))
        adapted = SamViTAdapterEncoder(sam_vit_config("b"))
    assert sum(p.numel() for p in model.parameters()) == 89_670_912  # SAM ViT-B image encoder
    cfg = adapted.config
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.window_size, cfg.global_attn_indexes, cfg.out_channels) == (
        768, 12, 12, 14, (2, 5, 8, 11), 256)
    assert tuple(adapted.blocks[2].attn.rel_pos_h.shape) == (127, 64)
    assert tuple(adapted.blocks[0].attn.rel_pos_h.shape) == (27, 64)


# -------------------------------------------------------------------------------------------------- FocalClick-XL


def _tiny_xl(**overrides: object) -> FocalClickXLNet:
    torch.manual_seed(0)
    return build_model({**TINY_XL, **overrides})


def _object_inputs(b: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(b, 3, size, size, generator=g)
    maps = torch.zeros(b, 3, size, size)
    maps[:, 1, 20:26, 20:26] = 1.0
    maps[:, 0, 10:40, 10:40] = 0.8
    return image, maps


def test_xl_is_registered_and_declares_its_inputs() -> None:
    assert "focalclick_xl" in list_models()
    net = _tiny_xl()
    assert isinstance(net, FocalClickXLNet)
    assert net.input_spec.prompt_layout == XL_PROMPT_LAYOUT == ("previous_mask", "positive", "negative")
    assert input_spec(net).prompt_channels == 3
    assert tuple(net.prompting) == FORMS
    assert net.pipeline["object_size"] == 256 and net.pipeline["detail_size"] == 64
    with pytest.raises(FinecutError, match="context_net"):
        build_model({"arch": "focalclick_xl", "context": {}})


def test_xl_forward_shapes_context_and_forms() -> None:
    net = _tiny_xl().eval()
    image, maps = _object_inputs()
    boxes = torch.tensor([[0.0, 0.0, 128.0, 128.0], [32.0, 16.0, 96.0, 80.0]])
    with torch.no_grad():
        context = net.encode_context(torch.randn(1, 3, 128, 128))
        assert context.shape == (1, 32, 8, 8) and net.context_stride == 16
        plain = net(image, maps)
        with_context = net.forward_object(image, maps, "clicks", context, boxes)
        assert plain["logits"].shape == (2, 1, 64, 64)
        assert plain["logits_lowres"].shape == (2, 1, 16, 16)
        assert torch.equal(plain["logits"], with_context["logits"])  # zero-initialised context projections
        for conv in net.object.context_proj:
            conv.weight.normal_(0, 0.1)
        fused = net.forward_object(image, maps, "clicks", context, boxes)["logits"]
        assert (fused - plain["logits"]).abs().max() > 1e-4
        other_box = net.forward_object(image, maps, "clicks", context, boxes.flip(0))["logits"]
        assert (other_box - fused).abs().max() > 1e-4
        for p in net.prompting["scribbles"].parameters():
            p.normal_(0, 1.0)
        scribbles = net.forward_object(image, maps, "scribbles", context, boxes)["logits"]
        assert (scribbles - fused).abs().max() > 1e-4
    with pytest.raises(FinecutError, match="prompt maps"):
        net(image, torch.zeros(2, 4, 64, 64))
    with pytest.raises(FinecutError, match="no prompting layer"):
        net(image, maps, "lasso")


def test_xl_backward_and_prompting_only_transfer() -> None:
    net = _tiny_xl().train()
    image, maps = _object_inputs(2, 32)
    context = net.encode_context(torch.randn(2, 3, 48, 64))
    out = net.forward_object(image, maps, "clicks", context, torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 2))
    detail = net.forward_detail(torch.randn(2, 3, 16, 16), torch.zeros(2, 3, 16, 16))
    (out["logits"].mean() + detail["alpha"].mean()).backward()
    for name, p in net.named_parameters():
        if name.startswith(("prompting.scribbles", "prompting.box", "prompting.coarse_mask")):
            assert p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    net.zero_grad(set_to_none=True)
    trainable = net.train_only_prompting("box")
    assert {id(p) for p in trainable} == {id(p) for p in net.prompting["box"].parameters()}
    assert 4_000 < sum(p.numel() for p in trainable) < 5_000
    assert net.prompting_bytes("box") < 20_000  # a few kB per form
    net.train()  # a training loop's call: the shared subnets stay in eval mode (BatchNorm statistics frozen)
    assert net.training and net.prompting["box"].training and not net.prompting["clicks"].training
    assert not net.object.training and not any(m.training for m in net.object.modules())
    stats = net.object.backbone._bn0.running_mean.clone()
    net.forward_object(image, maps, "box")["logits"].mean().backward()
    assert torch.equal(net.object.backbone._bn0.running_mean, stats)
    assert all(p.grad is not None for p in trainable)
    assert all(p.grad is None for n, p in net.named_parameters() if not n.startswith("prompting.box"))
    net.unfreeze()
    assert net.object.training and all(p.requires_grad for p in net.parameters())
    net.copy_prompting("clicks", "scribbles")
    assert torch.equal(net.prompting["scribbles"].net[0].weight, net.prompting["clicks"].net[0].weight)


def test_xl_checkpoint_round_trip(tmp_path: Path) -> None:
    config = dict(TINY_XL)
    net = _tiny_xl().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # no zero-initialised tensor left: every tensor must round-trip
    json_path, _ = save_checkpoint(tmp_path / "xl", net, config)
    doc = read_checkpoint_config(json_path)
    assert doc["model"]["arch"] == "focalclick_xl"
    assert doc["inputs"]["prompt_layout"] == list(XL_PROMPT_LAYOUT)
    loaded, _ = load_checkpoint(tmp_path / "xl")
    assert isinstance(loaded, FocalClickXLNet)
    image, maps = _object_inputs(1)
    with torch.no_grad():
        ctx_a, ctx_b = net.encode_context(torch.ones(1, 3, 64, 64)), loaded.encode_context(torch.ones(1, 3, 64, 64))
        a = net.forward_object(image, maps, "coarse_mask", ctx_a)["logits"]
        b = loaded.forward_object(image, maps, "coarse_mask", ctx_b)["logits"]
        da = net.forward_detail(image[:, :, :32, :32], torch.zeros(1, 3, 32, 32))["alpha"]
        db = loaded.forward_detail(image[:, :, :32, :32], torch.zeros(1, 3, 32, 32))["alpha"]
    assert torch.equal(ctx_a, ctx_b) and torch.equal(a, b) and torch.equal(da, db)


def test_xl_default_config_sizes() -> None:
    with torch.device("meta"):
        net = build_model({"arch": "focalclick_xl"})
    table = parameter_table(net)
    assert isinstance(net.context, ContextLite0Encoder) and net.context.input_size == 512
    assert 2.5e6 < table["context"] < 3.5e6 and 2.8e6 < table["object"] < 3.3e6
    assert table["detail"] < 4e5 and table["prompting.clicks"] == 4705
    assert table["total"] == sum(v for k, v in table.items() if k != "total")


def test_xl_segformer_style_object_net() -> None:
    net = _tiny_xl(object_net={"backbone": "mit_b0", "head": "segformer", "head_channels": 32}).eval()
    image, maps = _object_inputs(1)
    with torch.no_grad():
        out = net.forward_object(image, maps, "clicks", net.encode_context(torch.zeros(1, 3, 64, 64)))
    assert out["logits"].shape == (1, 1, 64, 64)


@pytest.mark.skipif(not SHIPPED.with_suffix(".safetensors").exists(), reason="shipped default checkpoint missing")
def test_object_net_starts_from_the_shipped_segmentor() -> None:
    net = build_model({"arch": "focalclick_xl"}).eval()
    report = init_object_from_focalclick(net, SHIPPED)
    assert report.sliced == sorted(f"prompting.{f}.net.0.weight" for f in FORMS)
    assert report.left_at_init == ["object.context_proj.0.bias", "object.context_proj.0.weight",
                                   "object.context_proj.1.bias", "object.context_proj.1.weight"]
    assert report.unused and all(k.startswith("refiner.") for k in report.unused)
    assert len(report.copied) > 300
    reference, _ = load_checkpoint(SHIPPED)
    image, maps = _object_inputs(1, 96)
    four = torch.cat([maps, torch.zeros(1, 1, 96, 96)], 1)  # + an empty tolerant channel
    with torch.no_grad():
        expected = reference.segmentor(image, four)["logits"]
        context = net.encode_context(torch.randn(1, 3, 96, 160))
        for form in FORMS:
            got = net.forward_object(image, maps, form, context, torch.tensor([[8.0, 8.0, 90.0, 90.0]]))["logits"]
            assert torch.allclose(got, expected, atol=1e-6), form


@pytest.mark.skipif(not SHIPPED.with_suffix(".safetensors").exists(), reason="shipped default checkpoint missing")
def test_rebase_replaces_the_object_net_and_only_the_named_prompting_layers() -> None:
    """A trained XL rebased on a segmentor: the Object-Net and the clicks layer become the segmentor's, the context
    projections restart at zero (clicks then compute the segmentor's logits exactly), the box layer is kept."""
    torch.manual_seed(3)
    net = build_model({"arch": "focalclick_xl"}).eval()
    with torch.no_grad():  # a "trained" XL: every tensor away from its initial value
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    box_before = {k: v.clone() for k, v in net.prompting_layer("box").state_dict().items()}
    assert any(v.abs().sum() > 0 for k, v in net.state_dict().items() if k.startswith("object.context_proj."))
    report = init_object_from_focalclick(net, SHIPPED, forms=["clicks"], zero_context=True)
    assert report.sliced == ["prompting.clicks.net.0.weight"]
    for key, value in net.prompting_layer("box").state_dict().items():
        assert torch.equal(value, box_before[key]), key
    assert all(not v.any() for k, v in net.state_dict().items() if k.startswith("object.context_proj."))
    reference, _ = load_checkpoint(SHIPPED)
    image, maps = _object_inputs(1, 96)
    four = torch.cat([maps, torch.zeros(1, 1, 96, 96)], 1)
    with torch.no_grad():
        expected = reference.segmentor(image, four)["logits"]
        context = net.encode_context(torch.randn(1, 3, 96, 160))
        got = net.forward_object(image, maps, "clicks", context, torch.tensor([[8.0, 8.0, 90.0, 90.0]]))["logits"]
        boxed = net.forward_object(image, maps, "box", context, torch.tensor([[8.0, 8.0, 90.0, 90.0]]))["logits"]
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(boxed, expected, atol=1e-3)  # the kept box layer encodes the prompts its own way
    with pytest.raises(FinecutError, match="prompting layers"):
        init_object_from_focalclick(net, SHIPPED, forms=["lasso"])


def test_context_input_geometry() -> None:
    sam = context_input_geometry(480, 854, 1024, pad_square=True)
    assert sam.resized == (576, 1024) and sam.padded == (1024, 1024)
    lite = context_input_geometry(480, 854, 512)
    assert lite.resized == (288, 512) and lite.padded == (288, 512)
    assert lite.map_box((0, 0, 854, 480)) == pytest.approx((0, 0, 512, 288))
    assert context_input_geometry(100, 30, 64).padded == (64, 32)


# ------------------------------------------------------------------------------------------------------- Detail-Net


def test_detail_net_batched_patches() -> None:
    torch.manual_seed(0)
    net = DetailNet().eval()
    assert sum(p.numel() for p in net.parameters()) < 4e5 and net.stride == 16
    with torch.no_grad():
        out = net(torch.randn(16, 3, 64, 64), torch.zeros(16, 3, 64, 64))
        odd = net(torch.randn(2, 3, 50, 37), torch.zeros(2, 3, 50, 37))
    assert out["alpha"].shape == (16, 1, 64, 64) and odd["alpha"].shape == (2, 1, 50, 37)
    assert 0 <= out["alpha"].min() and out["alpha"].max() <= 1
    single = DetailNet(trimap_channels=1).train()
    y = single(torch.randn(2, 3, 32, 32), torch.full((2, 1, 32, 32), 0.5))
    y["logits"].mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in single.parameters())
    with pytest.raises(FinecutError, match="trimap"):
        net(torch.randn(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))


def test_detail_net_primitive_input_and_residual() -> None:
    """The primitive as one more input channel, through zero-initialised convolutions (a Detail-Net gaining it
    computes what it did); ``residual`` adds the primitive's logit, so a zero classifier returns the primitive."""
    torch.manual_seed(0)
    plain = DetailNet().eval()
    grown = DetailNet(primitive_input=True).eval()
    report = grown.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(report.missing_keys) == ["primitive.skip.weight", "primitive.stem.weight"] and grown.input_channels == 4
    image, trimap = torch.randn(2, 3, 40, 40), torch.zeros(2, 3, 40, 40)
    trimap[:, 2] = 1.0
    primitive = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(grown(image, torch.cat([trimap, primitive], 1))["alpha"], plain(image, trimap)["alpha"])
    residual = DetailNet(primitive_input=True, residual=True).eval()
    torch.nn.init.zeros_(residual.classifier.weight)
    torch.nn.init.zeros_(residual.classifier.bias)
    with torch.no_grad():
        out = residual(image, torch.cat([trimap, primitive.clamp(0.01, 0.99)], 1))["alpha"]
    assert torch.allclose(out, primitive.clamp(0.01, 0.99), atol=1e-5)
    with pytest.raises(FinecutError, match="4 channels"):
        grown(image, trimap)
    with pytest.raises(FinecutError, match="needs primitive_input"):
        DetailNet(residual=True)


def test_trimap_from_probs_and_compose() -> None:
    probs = torch.tensor([[[[0.05, 0.5, 0.95, 0.5, 0.05]]]])
    pos = torch.tensor([[[[0.0, 0.0, 0.0, 1.0, 1.0]]]])
    neg = torch.tensor([[[[0.0, 1.0, 0.0, 0.0, 1.0]]]])
    tri = trimap_from_probs(probs, pos, neg)
    # bg / unknown->bg (negative) / fg / unknown->fg (positive) / both marks -> unknown
    assert tri[0, :, 0].argmax(0).tolist() == [0, 0, 1, 1, 2]
    assert torch.equal(tri.sum(1), torch.ones(1, 1, 5))
    one = trimap_from_probs(probs, channels=1)
    assert one.flatten().tolist() == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert torch.equal(trimap_one_hot(one), trimap_from_probs(probs))
    alpha = torch.full((1, 1, 1, 5), 0.3)
    assert compose_alpha(alpha, trimap_from_probs(probs)).flatten().tolist() == pytest.approx([0, 0.3, 1, 0.3, 0])


@pytest.mark.parametrize("band", [1, 3, 6])
def test_near_boundary_is_the_square_window_band(band: int) -> None:
    """The separable max (a column pass, then a row pass) marks exactly the pixels one square max-pool of side
    2 band + 1 marks, on both sides of the boundary, edges included."""
    mask = torch.rand(4, 1, 37, 29, generator=torch.Generator().manual_seed(band)) > 0.8
    k = 2 * band + 1
    inside = torch.nn.functional.max_pool2d(mask.float(), k, stride=1, padding=band) > 0
    outside = torch.nn.functional.max_pool2d((~mask).float(), k, stride=1, padding=band) > 0
    assert torch.equal(near_boundary(mask, band), inside & outside)
    single = torch.zeros(1, 1, 20, 20, dtype=torch.bool)
    single[0, 0, 10, 10] = True
    ring = near_boundary(single, band)[0, 0]
    assert ring[10 - band, 10 + band] and not ring[10 - band - 1, 10] and not ring[10, 10 + band + 1]


def test_trimap_band_leaves_only_the_boundary_unknown() -> None:
    """A soft primitive (a ramp from 0.2 to 0.8 over 40 px): without a band all of it is unknown; with band 3 only
    the pixels within 3 px of its 0.5 crossing are, the rest decided by the side of the crossing they are on, and
    clicks still override."""
    ramp = torch.linspace(0.2, 0.8, 40).view(1, 1, 1, 40).expand(1, 1, 8, 40).contiguous()
    assert bool((trimap_from_probs(ramp)[:, 2] == 1).all())
    tri = trimap_from_probs(ramp, band=3)
    labels = tri[0, :, 0].argmax(0)
    crossing = int((ramp[0, 0, 0] > 0.5).float().argmax())  # first foreground column
    unknown = (labels == 2).nonzero().flatten().tolist()
    assert unknown == list(range(crossing - 3, crossing + 3))
    assert bool((labels[:crossing - 3] == 0).all()) and bool((labels[crossing + 3:] == 1).all())
    pos = torch.zeros_like(ramp)
    pos[..., 2] = 1.0  # a click on the far background side wins
    assert int(trimap_from_probs(ramp, pos, band=3)[0, :, 0, 2].argmax()) == 1


# ---------------------------------------------------------------------------------------------------- alpha losses


def test_alpha_losses() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1.0
    target[..., 8, 2:14] = 0.5
    assert alpha_l1(target, target) == 0 and alpha_mse(target, target) == 0
    assert alpha_gradient_loss(target, target) == 0
    blurred = torch.nn.functional.avg_pool2d(target, 3, 1, 1, count_include_pad=False)
    assert alpha_gradient_loss(blurred, target) > 0.01
    assert alpha_gradient_loss(torch.full_like(target, 0.3), torch.full_like(target, 0.7)) < 1e-7  # constant offset
    pred = torch.full_like(target, 0.5)
    weight = torch.zeros_like(target)
    weight[..., 0, 0] = 1.0  # one pixel, target 0
    assert alpha_l1(pred, target, weight) == pytest.approx(0.5)
    assert alpha_mse(pred, target, weight) == pytest.approx(0.25)
    assert alpha_l1(pred, target, torch.zeros_like(target)) == 0
    terms = alpha_loss(blurred, target, mse=1.0)
    assert set(terms) == {"alpha_l1", "alpha_mse", "alpha_grad", "loss"}
    assert terms["loss"] == pytest.approx(float(terms["alpha_l1"] + terms["alpha_mse"] + terms["alpha_grad"]))
    x = blurred.clone().requires_grad_(True)
    alpha_loss(x, target)["loss"].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    fg, bg = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    image = target * fg + (1 - target) * bg
    assert alpha_composition_loss(target, fg, bg, image) < 1e-6
    assert alpha_composition_loss(blurred, fg, bg, image) > 0


# --------------------------------------------------------------------------------------------- synthetic composites


def _background(h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(7)
    base = np.linspace(40, 200, w)[None, :, None] + rng.normal(0, 10, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_composite_is_exact_and_fractional(kind: str) -> None:
    bg = _background()
    c = render_alpha_composite(bg, seed=3, kind=kind)
    assert c.kind == kind and c.image.shape == bg.shape and c.image.dtype == np.uint8
    assert c.alpha.dtype == np.float32 and c.alpha.shape == bg.shape[:2]
    assert c.alpha.min() >= 0 and c.alpha.max() <= 1 and c.alpha.max() == 1.0
    assert np.array_equal(c.gt, c.alpha > 0.5) and c.gt.any()
    fractional = (c.alpha > 0.02) & (c.alpha < 0.98)
    assert fractional.sum() > (100 if kind != "cutout" else 20)
    if kind in ("hair", "fur", "wires"):  # strands: many pixels that are mostly background
        assert ((c.alpha > 0.02) & (c.alpha < 0.5)).sum() > 50
    # the image is the composite of exactly this alpha (up to uint8 rounding)
    expected = c.alpha[..., None] * c.foreground + (1 - c.alpha[..., None]) * bg.astype(np.float32)
    assert np.abs(c.image.astype(np.float32) - expected).max() <= 0.51
    outside = np.ones(bg.shape[:2], bool)
    x0, y0, x1, y1 = c.box
    outside[y0:y1, x0:x1] = False
    assert not c.alpha[outside].any() and np.array_equal(c.image[outside], bg[outside])


def test_alpha_composite_is_deterministic() -> None:
    bg = _background()
    a = render_alpha_composite(bg, seed=11)
    b = render_alpha_composite(bg, seed=11)
    c = render_alpha_composite(bg, seed=12)
    assert a.kind == b.kind and np.array_equal(a.alpha, b.alpha) and np.array_equal(a.image, b.image)
    assert not np.array_equal(a.alpha, c.alpha)
    kinds = {render_alpha_composite(bg, seed=s).kind for s in range(12)}
    assert len(kinds) >= 3


def test_alpha_composite_on_a_real_cutout_and_bad_input() -> None:
    bg = _background()
    rgb = np.full((40, 30, 3), 200, np.uint8)
    mask = np.zeros((40, 30), bool)
    mask[5:35, 8:22] = True
    c = render_alpha_composite(bg, seed=5, kind="fur", obj=(rgb, mask))
    assert c.gt.sum() > 100 and ((c.alpha > 0) & (c.alpha < 1)).sum() > 50
    with pytest.raises(FinecutError, match="kind"):
        render_alpha_composite(bg, seed=0, kind="smoke")
    with pytest.raises(FinecutError, match="uint8"):
        render_alpha_composite(bg.astype(np.float32), seed=0)



def test_prompt_columns_by_channel_name_and_shape_mismatch() -> None:
    from finecut.models.warm_start import prompt_columns

    source = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).view(2, 4, 3, 3)  # [prev, pos, neg, tol]
    layout = ("previous_mask", "positive", "negative", "tolerant")
    init = torch.zeros(2, 3, 3, 3)
    out = prompt_columns(source, init, layout, ("previous_mask", "positive", "negative"))
    assert out is not None and torch.equal(out, source[:, :3])
    assert torch.equal(init, torch.zeros(2, 3, 3, 3))  # the init tensor is not modified
    # another width (a prompting layer with another prompt_hidden) keeps its init instead of failing
    assert prompt_columns(source, torch.zeros(5, 3, 3, 3), layout, ("positive", "negative")) is None
    assert prompt_columns(source, init, layout, ("other_a", "other_b", "other_c")) is None
