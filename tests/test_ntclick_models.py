"""NTClick ECP and HRR networks: shapes, padding/cropping, the 4096 cap, striped inference, registry round trip."""

from __future__ import annotations

import pytest
import torch

from finecut.errors import FinecutError
from finecut.models.ntclick import (
    ECPConfig,
    HRRConfig,
    NTClickECP,
    NTClickHRR,
    padded_size,
    working_size,
)
from finecut.models.registry import build_model, list_models
from helpers_training import TINY_ECP, TINY_HRR



def _inputs(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, height, width, generator=gen)
    fbu = torch.softmax(torch.randn(batch, 3, height, width, generator=gen), dim=1)
    return image, fbu


def test_both_architectures_are_registered() -> None:
    names = list_models()
    assert "ntclick_ecp" in names and "ntclick_hrr" in names


def test_size_helpers_follow_the_supplementary() -> None:
    assert padded_size(1000, 800) == (1024, 896)
    assert padded_size(4000, 3000) == (4096, 3072)
    assert padded_size(128, 256) == (128, 256)
    assert working_size(3000, 4000, 4096) == (3000, 4000)
    assert working_size(6000, 8000, 4096) == (3072, 4096)
    assert working_size(8192, 5000, 4096) == (4096, 2500)
    assert working_size(10000, 3, 4096) == (4096, 1)


@pytest.mark.parametrize("pattern", ["alternate", "both"])
def test_hrr_forward_backward_with_padding_and_cropping(pattern: str) -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "ntclick_hrr", **TINY_HRR, "block_pattern": pattern})
    kinds = [attn.kind for block in model.blocks for attn in block.attns]
    assert set(kinds) == {"neighborhood", "grid"}
    image, fbu = _inputs(2, 100, 150)  # padded to 128 x 256 inside
    out = model(image, fbu)
    assert out["logits"].shape == (2, 1, 100, 150)
    assert out["features"].shape == (2, 32, 8, 16)
    loss = out["logits"].sigmoid().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_hrr_input_128x192_keeps_size_and_padding_is_background() -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "ntclick_hrr", **TINY_HRR}).eval()
    image, fbu = _inputs(1, 128, 192)
    with torch.no_grad():
        out = model(image, fbu)
    assert out["logits"].shape == (1, 1, 128, 192)
    assert out["features"].shape == (1, 32, 8, 16)  # 192 is padded to 256
    # the model sees the image padded with zeros and a background FBU map: same as padding by hand
    image_p = torch.nn.functional.pad(image[..., :100, :150], (0, 106, 0, 28))  # to 128 x 256 by hand
    fbu_p = torch.nn.functional.pad(fbu[..., :100, :150], (0, 106, 0, 28))
    fbu_p[:, 0, 100:, :] = 1.0
    fbu_p[:, 0, :, 150:] = 1.0
    with torch.no_grad():
        cropped = model(image[..., :100, :150], fbu[..., :100, :150])["logits"]
        by_hand = model(image_p, fbu_p)["logits"][..., :100, :150]
    torch.testing.assert_close(cropped, by_hand, rtol=1e-5, atol=1e-5)


def test_hrr_striped_inference_equals_plain_inference() -> None:
    torch.manual_seed(0)
    plain = build_model({"arch": "ntclick_hrr", **TINY_HRR, "stripe_inference": False}).eval()
    striped = build_model({"arch": "ntclick_hrr", **TINY_HRR, "stripe_rows": 10}).eval()
    striped.load_state_dict(plain.state_dict())
    image, fbu = _inputs(1, 130, 200)
    with torch.inference_mode():
        a = plain(image, fbu)["logits"]
        b = striped(image, fbu)["logits"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # with autograd on, the striped model takes the plain path (and can backpropagate)
    out = striped(image, fbu)["logits"]
    assert out.requires_grad
    torch.testing.assert_close(out.detach(), a, rtol=1e-5, atol=1e-5)


def _hrr_with_visible_logits(**overrides: object) -> NTClickHRR:
    """A tiny random HRR whose output layer is not near zero (the default init's std 0.01 hides differences)."""
    torch.manual_seed(0)
    model = build_model({"arch": "ntclick_hrr", **TINY_HRR, **overrides}).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.head[-1].weight, std=1.0)
    return model


def _region(batch: int, height: int, width: int) -> torch.Tensor:
    region = torch.zeros(batch, height, width, dtype=torch.bool)
    region[0, 40:52, 20:300] = True  # a band across several tiles of one tile row
    region[0, 200:203, 5:9] = True  # a speck
    region[0, 124:132, 200:204] = True  # across the border of tile rows 0 and 1: next to two runs' cut edges
    region[-1, height - 2:, width - 2:] = True  # the bottom-right corner (a clipped halo)
    return region


def test_hrr_region_decoding_matches_the_full_pass_inside_the_region() -> None:
    model = _hrr_with_visible_logits()
    image, fbu = _inputs(2, 300, 330)  # padded to 384 x 384: 3 x 3 tiles of 128
    region = _region(2, 300, 330)
    with torch.inference_mode():
        full = model(image, fbu)["logits"]
        sparse = model(image, fbu, region)["logits"]
    assert sparse.shape == full.shape
    torch.testing.assert_close(sparse[:, 0][region], full[:, 0][region], rtol=1e-5, atol=1e-5)
    # tiles without a region pixel are skipped: the bottom row of tiles of sample 0 holds none
    assert (sparse[0, 0, 260:] == NTClickHRR.SKIPPED_LOGIT).all()
    assert (full[:, 0][region].abs() > 1e-3).float().mean() > 0.9  # logits that would show a difference
    # the runs: sample 0 has a 3-tile run in tile row 0 and a 2-tile run in row 1; sample 1 its corner tile
    padded = torch.nn.functional.pad(region, (0, 54, 0, 84))
    assert model.tile_runs(padded) == [(0, 0, 128, 0, 384), (0, 128, 256, 0, 256), (1, 256, 384, 256, 384)]


def test_hrr_region_decoding_needs_its_halo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the halo a run's cut edges change the logits near them: the halo is what makes the two passes agree."""
    model = _hrr_with_visible_logits()
    image, fbu = _inputs(2, 300, 330)
    region = _region(2, 300, 330)
    monkeypatch.setattr(NTClickHRR, "TILE_HALO", 0)
    with torch.inference_mode():
        full = model(image, fbu)["logits"]
        sparse = model(image, fbu, region)["logits"]
    assert not torch.allclose(sparse[:, 0][region], full[:, 0][region], rtol=1e-5, atol=1e-5)


def test_hrr_region_decoding_through_the_long_side_cap() -> None:
    model = _hrr_with_visible_logits(max_side=256)
    image, fbu = _inputs(1, 300, 520)  # worked at 148 x 256, upsampled back
    region = torch.zeros(1, 300, 520, dtype=torch.bool)
    region[0, 100:140, 400:520] = True
    with torch.inference_mode():
        full = model(image, fbu)["logits"]
        sparse = model(image, fbu, region)["logits"]
    torch.testing.assert_close(sparse[:, 0][region], full[:, 0][region], rtol=1e-5, atol=1e-5)


def test_hrr_region_must_match_the_image_and_is_ignored_with_autograd() -> None:
    model = _hrr_with_visible_logits()
    image, fbu = _inputs(1, 128, 128)
    with pytest.raises(FinecutError, match="HRR region"):
        model(image, fbu, torch.ones(1, 1, 128, 128, dtype=torch.bool))
    region = torch.zeros(1, 128, 128, dtype=torch.bool)
    out = model(image, fbu, region)["logits"]  # training: the full pass, differentiable
    assert out.requires_grad and not (out == NTClickHRR.SKIPPED_LOGIT).any()


def test_hrr_caps_the_long_side_and_upsamples_back(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "ntclick_hrr", **TINY_HRR, "max_side": 256}).eval()
    seen: list[tuple[int, ...]] = []
    original = model.encode

    def spy(image: torch.Tensor, fbu: torch.Tensor, clicks: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(tuple(image.shape))
        return original(image, fbu, clicks)

    monkeypatch.setattr(model, "encode", spy)
    image, fbu = _inputs(1, 300, 420)  # long side 420 > 256 -> works at 183 x 256, padded to 256 x 256
    with torch.no_grad():
        out = model(image, fbu)
    assert out["logits"].shape == (1, 1, 300, 420)
    assert seen == [(1, 3, 256, 256)]
    assert working_size(300, 420, 256) == (183, 256)
    # below the cap nothing is resized: 200 x 250 -> padded to 256 x 256
    seen.clear()
    with torch.no_grad():
        model(*_inputs(1, 200, 250))
    assert seen == [(1, 3, 256, 256)]


def test_hrr_global_variant_and_config_round_trip() -> None:
    model = build_model({"arch": "ntclick_hrr", **TINY_HRR, "block_pattern": "global"})
    assert {attn.kind for block in model.blocks for attn in block.attns} == {"global"}
    config = model.arch_config()
    assert config["arch"] == "ntclick_hrr" and config["low_channels"] == [4, 4, 8, 8]
    rebuilt = build_model(config)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config


def test_hrr_rejects_bad_inputs_and_configs() -> None:
    model = NTClickHRR(HRRConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_HRR.items()}))
    image, fbu = _inputs(1, 64, 64)
    with pytest.raises(FinecutError, match="FBU map"):
        model(image, fbu[:, :2])
    with pytest.raises(FinecutError, match="does not match"):
        model(image, fbu[..., :32])
    with pytest.raises(FinecutError, match="block_pattern"):
        build_model({"arch": "ntclick_hrr", "block_pattern": "window"})
    with pytest.raises(FinecutError, match="patch_size"):
        HRRConfig(patch_size=8)
    with pytest.raises(FinecutError, match="unknown HRRConfig option"):
        build_model({"arch": "ntclick_hrr", "widht": 3})


@pytest.mark.parametrize("prompt_channels", [4, 3])
def test_ecp_shapes_and_backward(prompt_channels: int) -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "ntclick_ecp", **TINY_ECP, "prompt_channels": prompt_channels})
    image = torch.randn(2, 3, 64, 80)
    prompts = torch.zeros(2, prompt_channels, 64, 80)
    prompts[:, -3, 30:35, 40:45] = 1.0  # a positive click disk
    out = model(image, prompts)
    assert out["logits"].shape == (2, 3, 64, 80)
    assert out["features"].shape == (2, 32, 4, 6)  # padded to 64 x 96 inside
    torch.nn.functional.cross_entropy(out["logits"], torch.randint(0, 3, (2, 64, 80))).backward()
    assert model.prompt_embed.proj.weight.grad is not None
    assert model.prompt_embed.proj.weight.grad.abs().sum() > 0


def test_ecp_output_depends_on_the_prompts_and_odd_sizes_work() -> None:
    torch.manual_seed(0)
    model = NTClickECP(ECPConfig(img_size=64, embed_dim=32, depth=1, num_heads=2,
                                 pyramid_channels=(8, 8, 8, 8), head_channels=8)).eval()
    image = torch.randn(1, 3, 50, 70)
    empty = torch.zeros(1, 4, 50, 70)
    clicked = empty.clone()
    clicked[:, 3, 20:30, 20:30] = 1.0  # tolerant click
    with torch.no_grad():
        a = model(image, empty)["logits"]
        b = model(image, clicked)["logits"]
    assert a.shape == (1, 3, 50, 70)
    assert not torch.allclose(a, b)


def test_ecp_rejects_bad_inputs_and_configs() -> None:
    model = build_model({"arch": "ntclick_ecp", **TINY_ECP})
    with pytest.raises(FinecutError, match="prompt maps"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    with pytest.raises(FinecutError, match="do not match"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 4, 32, 64))
    with pytest.raises(FinecutError, match="prompt_channels"):
        ECPConfig(prompt_channels=2)
    config = model.arch_config()
    assert config["arch"] == "ntclick_ecp" and config["prompt_channels"] == 4
    assert build_model(config).config == model.config


def test_hrr_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = build_model({"arch": "ntclick_hrr", **TINY_HRR})
    ckpt = build_model({"arch": "ntclick_hrr", **TINY_HRR, "grad_checkpointing": True})
    ckpt.load_state_dict(plain.state_dict())
    image, fbu = _inputs(1, 128, 128)
    plain(image, fbu)["logits"].sum().backward()
    ckpt(image, fbu)["logits"].sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def _click_maps(batch: int, height: int, width: int) -> torch.Tensor:
    maps = torch.zeros(batch, 3, height, width)
    maps[:, 2, 40:50, 60:70] = 1.0  # a tolerant disk's square stand-in
    maps[:, 1, 100:110, 20:30] = 1.0  # a negative one
    return maps


def test_hrr_click_input_starts_click_blind_and_then_changes_the_answer() -> None:
    """click_channels=3 (a departure): at its zero initialisation the HRR's answer is the click-blind one's, whatever
    the clicks; once its click embedding is trained the clicks change the answer, near them more than far away."""
    torch.manual_seed(0)
    blind = build_model({"arch": "ntclick_hrr", **TINY_HRR}).eval()
    grown = build_model({"arch": "ntclick_hrr", **TINY_HRR, "click_channels": 3}).eval()
    report = grown.load_state_dict(blind.state_dict(), strict=False)
    assert report.missing_keys == ["click_embed.weight", "click_embed.bias"] and not report.unexpected_keys
    image, fbu = _inputs(1, 150, 200)
    maps = _click_maps(1, 150, 200)
    with torch.inference_mode():
        want = blind(image, fbu)["logits"]
        torch.testing.assert_close(grown(image, fbu, clicks=maps)["logits"], want)
        torch.testing.assert_close(grown(image, fbu)["logits"], want)
        torch.nn.init.normal_(grown.click_embed.weight, std=0.5)
        torch.nn.init.normal_(grown.click_embed.bias, std=0.1)
        with_clicks = grown(image, fbu, clicks=maps)["logits"]
        # no clicks = all-zero maps, whose embedding is the bias
        zeros = torch.zeros_like(maps)
        torch.testing.assert_close(grown(image, fbu)["logits"], grown(image, fbu, clicks=zeros)["logits"])
        without = grown(image, fbu)["logits"]
    change = (with_clicks - without).abs()[0, 0]
    assert change[30:60, 50:80].mean() > 3 * change[:, 150:].mean() > 0


def test_hrr_click_input_through_padding_cap_and_region() -> None:
    model = build_model({"arch": "ntclick_hrr", **TINY_HRR, "click_channels": 3, "max_side": 256}).eval()
    torch.nn.init.normal_(model.click_embed.weight, std=0.5)
    image, fbu = _inputs(1, 200, 300)  # worked at 171 x 256, padded to 256 x 256
    maps = _click_maps(1, 200, 300)
    region = torch.zeros(1, 200, 300, dtype=torch.bool)
    region[0, 30:80, 40:120] = True
    with torch.inference_mode():
        full = model(image, fbu, clicks=maps)["logits"]
        sparse = model(image, fbu, region, clicks=maps)["logits"]
    assert full.shape == (1, 1, 200, 300)
    torch.testing.assert_close(sparse[:, 0][region], full[:, 0][region], rtol=1e-5, atol=1e-5)
    out = model(image, fbu, clicks=maps)["logits"]
    out.mean().backward()
    assert model.click_embed.weight.grad is not None and model.click_embed.weight.grad.abs().sum() > 0


def test_hrr_click_input_is_checked() -> None:
    image, fbu = _inputs(1, 128, 128)
    blind = build_model({"arch": "ntclick_hrr", **TINY_HRR})
    with pytest.raises(FinecutError, match="no click input"):
        blind(image, fbu, clicks=torch.zeros(1, 3, 128, 128))
    grown = build_model({"arch": "ntclick_hrr", **TINY_HRR, "click_channels": 3})
    with pytest.raises(FinecutError, match="HRR click maps"):
        grown(image, fbu, clicks=torch.zeros(1, 2, 128, 128))
    with pytest.raises(FinecutError, match="do not match"):
        grown(image, fbu, clicks=torch.zeros(1, 3, 64, 128))
    with pytest.raises(FinecutError, match="click_channels"):
        build_model({"arch": "ntclick_hrr", **TINY_HRR, "click_channels": 2})
    assert build_model(grown.arch_config()).config == grown.config
