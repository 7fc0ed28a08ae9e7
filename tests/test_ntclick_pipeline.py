"""NTClick engine: shapes, final-mask rule, HRR only on the uncertain box, tolerant clicks, click rules, checkpoints."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

import finecut
from finecut import fbu
from finecut.models.checkpoint import save_checkpoint
from finecut.models.ntclick import ECPConfig, HRRConfig, NTClickNet, build_ntclick
from finecut.models.registry import build_model
from finecut.registry import build_engine
from finecut.pipelines.ntclick import NTClickEngine, click_in, click_label, grow_box, lower_near_tolerant
from finecut.predictor import Predictor
from finecut.prompts import Click, ClickKind, Prompts
from helpers_training import TINY_ECP, TINY_HRR



def _tiny_net() -> NTClickNet:
    torch.manual_seed(0)
    return build_ntclick(ecp=TINY_ECP, hrr=TINY_HRR).eval()


def _image(height: int = 200, width: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[: height // 2] += 180  # bright top half, dark bottom half
    return image


class PatternECP(nn.Module):
    """ECP stand-in: foreground left of 30 % of the width, uncertain in a central block, background elsewhere."""

    def __init__(self, uncertain_cols: tuple[float, float] = (0.4, 0.6)) -> None:
        super().__init__()
        self.config = ECPConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_ECP.items()})
        self.maps: list[torch.Tensor] = []
        self.uncertain_cols = uncertain_cols

    def forward(self, image: torch.Tensor, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        self.maps.append(maps.clone())
        _, _, h, w = image.shape
        rows = torch.arange(h)[:, None].float() / h
        cols = torch.arange(w)[None, :].float() / w
        labels = torch.full((h, w), fbu.FBU_BACKGROUND)
        labels[(cols < 0.3).expand(h, w)] = fbu.FBU_FOREGROUND
        lo, hi = self.uncertain_cols
        labels[(rows > 0.35) & (rows < 0.65) & (cols > lo) & (cols < hi)] = fbu.FBU_UNCERTAIN
        logits = torch.nn.functional.one_hot(labels, 3).permute(2, 0, 1).float()[None] * 20
        return {"logits": logits.expand(image.shape[0], -1, -1, -1), "features": image[:, :, ::16, ::16]}


class SpyHRR(nn.Module):
    """HRR stand-in recording its input sizes: logit +10 on bright pixels, ``dark_logit`` (-10) on dark ones."""

    def __init__(self, dark_logit: float = -10.0) -> None:
        super().__init__()
        self.config = HRRConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_HRR.items()})
        self.shapes: list[tuple[int, ...]] = []
        self.regions: list[torch.Tensor | None] = []
        self.dark_logit = dark_logit

    def forward(self, image: torch.Tensor, fbu_map: torch.Tensor,
                region: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.shapes.append(tuple(image.shape))
        self.regions.append(region)
        assert fbu_map.shape[1] == 3 and fbu_map.shape[-2:] == image.shape[-2:]
        assert region is None or tuple(region.shape) == (image.shape[0], *image.shape[-2:])
        return {"logits": torch.where(image[:, :1] > 0, 10.0, self.dark_logit), "features": image}


def _stub_engine(uncertain_cols: tuple[float, float] = (0.4, 0.6), dark_logit: float = -10.0,
                 **options) -> tuple[NTClickEngine, PatternECP, SpyHRR]:
    net = _tiny_net()
    net.ecp, net.hrr = PatternECP(uncertain_cols), SpyHRR(dark_logit)
    return NTClickEngine(net, zoom_in=False, **options), net.ecp, net.hrr


def test_engine_predicts_full_size_probs_and_mask() -> None:
    engine = NTClickEngine(_tiny_net())
    image = _image(120, 170)
    features = engine.encode_image(image)
    assert features["full"].shape == (1, 3, 120, 170)
    prompts = Prompts(clicks=(Click(80, 60, ClickKind.POSITIVE),))
    out = engine.predict(image, features, prompts, None)
    assert out.probs.shape == (120, 170) and out.probs.dtype == np.float32
    assert out.mask is not None and out.mask.shape == (120, 170) and out.mask.dtype == bool
    assert 0.0 <= out.probs.min() and out.probs.max() <= 1.0
    assert out.state["num_clicks"] == 1 and len(out.state["target_crop"]) == 4
    # a second click goes through the Predictor with the previous prediction (zoom-in crop from its mask)
    predictor = Predictor(engine)
    predictor.set_image(image)
    first = predictor.predict([Click(80, 60)])
    second = predictor.predict([Click(80, 60), Click(20, 100, ClickKind.NEGATIVE)], previous=first)
    assert second.mask.shape == (120, 170) and second.probs.shape == (120, 170)


def test_final_mask_rule_and_hrr_runs_only_on_uncertain_box() -> None:
    engine, _, hrr = _stub_engine()
    image = _image(400, 600)
    out = engine.predict(image, engine.encode_image(image), Prompts(clicks=(Click(50, 200),)), None)
    # the ECP's labels, upsampled to full resolution: recompute them the way the engine does
    cols = (np.arange(600) + 0.5) / 600
    rows = (np.arange(400) + 0.5) / 400
    fg = np.broadcast_to(cols[None] < 0.3, (400, 600))
    uncertain = (rows[:, None] > 0.35) & (rows[:, None] < 0.65) & (cols[None] > 0.4) & (cols[None] < 0.6)
    bright = np.zeros((400, 600), bool)
    bright[:200] = True
    interior = np.zeros((400, 600), bool)
    interior[150:250, 250:350] = True  # well inside the uncertain block, far from resampling blur
    assert out.mask[interior & bright].all() and not out.mask[interior & ~bright].any()
    assert out.mask[:, :170].all() and not out.mask[:, 370:].any() and not out.mask[:140, 200:].any()
    assert np.all(out.probs[interior & bright] > 0.99) and np.all(out.probs[interior & ~bright] < 0.01)
    assert np.all(out.probs[fg & ~uncertain] == 1.0) and np.all(out.probs[:, 380:] == 0.0)
    assert np.array_equal(out.mask, out.probs > 0.5)
    # HRR saw one box: the uncertain block plus margin, grown to multiples of 128, much smaller than the image
    assert len(hrr.shapes) == 1
    x0, y0, x1, y1 = out.state["hrr_box"]
    assert hrr.shapes[0] == (1, 3, y1 - y0, x1 - x0)
    assert (y1 - y0) % 128 == 0 and (x1 - x0) % 128 == 0
    assert (y1 - y0, x1 - x0) == (256, 256) and (y1 - y0) * (x1 - x0) < 0.3 * 400 * 600
    assert x0 <= 240 and x1 >= 360 and y0 <= 140 and y1 >= 260
    assert out.state["uncertain_pixels"] > 0
    # the pixels it must decide are named, so its finest stages can skip the rest of the box
    region = hrr.regions[0][0].numpy()
    assert region.sum() == out.state["uncertain_pixels"] and region[150 - y0:250 - y0, 250 - x0:350 - x0].all()


def test_state_names_the_fbu_class_and_hrr_scope_at_the_newest_click() -> None:
    """``click_label`` / ``click_by_hrr``: whether the newest click landed where the HRR decides (what a diagnosis of
    clicks that change nothing needs) or where the ECP already called foreground or background."""
    image = _image(400, 600)
    engine, _, _ = _stub_engine(hrr_scope="session")
    features = engine.encode_image(image)
    on_fg = engine.predict(image, features, Prompts(clicks=(Click(50, 200),)), None)
    assert on_fg.state["click_label"] == "foreground" and on_fg.state["click_by_hrr"] is False
    in_band = (Click(50, 200), Click(300, 200, ClickKind.POSITIVE))
    precise = engine.predict(image, features, Prompts(clicks=in_band), None)
    # "session": the HRR decides the uncertain block only once a tolerant click was given
    assert precise.state["click_label"] == "uncertain" and precise.state["click_by_hrr"] is False
    tolerant = (Click(50, 200), Click(300, 200, ClickKind.TOLERANT))
    out = engine.predict(image, features, Prompts(clicks=tolerant), None)
    assert out.state["click_label"] == "uncertain" and out.state["click_by_hrr"] is True
    on_bg = engine.predict(image, features, Prompts(clicks=(*tolerant, Click(550, 50, ClickKind.NEGATIVE))), None)
    assert on_bg.state["click_label"] == "background" and on_bg.state["click_by_hrr"] is False
    assert click_label(np.zeros((4, 4), np.uint8), None) is None and click_in(np.ones((4, 4), bool), None) is None


def test_ecp_inputs_are_never_padded_inside_the_network() -> None:
    """The ECP input's sides are multiples of its input_multiple, so it never pads: a zero strip inside the network
    (DRIVE's 565×584 at long side 256 was 240×256, padded to 256²) is out of the ECP's training distribution."""
    engine, ecp, _ = _stub_engine()
    engine.options["zoom_in"] = True
    multiple = ecp.config.input_multiple
    assert multiple == 2 * ecp.config.patch_size == 32
    image = _image(400, 300)  # at long side 64 the width is 48: a multiple of 16 but not of 32
    predictor = Predictor(engine)
    predictor.set_image(image)
    first = predictor.predict([Click(50, 300)])
    predictor.predict([Click(50, 300), Click(90, 310, ClickKind.NEGATIVE)], previous=first)
    assert len(ecp.maps) == 2
    for maps in ecp.maps:
        h, w = maps.shape[-2:]
        assert h % multiple == 0 and w % multiple == 0
        assert max(h, w) == engine.options["ecp_size"] == 64
    assert tuple(ecp.maps[0].shape[-2:]) == (64, 64)


@pytest.mark.parametrize("rule", ["paper", "disk", "component", "detached"])
def test_negative_click_rules(rule: str) -> None:
    """A negative click on foreground the HRR decided: kept ("paper", the paper's mask), a click-radius disk removed
    ("disk"), or the whole HRR-decided component touching that disk removed ("component"); the ECP's certain
    foreground is never taken away beyond the disk."""
    engine, _, _ = _stub_engine(negative_rule=rule)
    image = _image(400, 600)
    features = engine.encode_image(image)
    positive = Click(50, 300)
    base = engine.predict(image, features, Prompts(clicks=(positive,)), None)
    hrr_fg = np.zeros((400, 600), bool)
    hrr_fg[150:195, 250:350] = True  # bright part of the ECP's uncertain block, where the stub HRR says foreground
    assert base.mask[hrr_fg].all()
    clicks = (positive, Click(300, 170, ClickKind.NEGATIVE), Click(60, 100, ClickKind.NEGATIVE))
    out = engine.predict(image, features, Prompts(clicks=clicks), None)
    disk = np.zeros((400, 600), np.uint8)
    for c in clicks[1:]:
        cv2.circle(disk, (int(c.x), int(c.y)), 5, 1, thickness=-1)
    disk = disk.astype(bool)
    certain_fg = np.zeros((400, 600), bool)
    certain_fg[:, :170] = True
    if rule == "paper":
        assert np.array_equal(out.mask, base.mask)
    else:
        assert not out.mask[disk].any() and out.probs[disk].max() == 0.0
        assert out.mask[certain_fg & ~disk].all()
        assert np.array_equal(out.mask, out.probs > 0.5)
    if rule == "disk":
        assert out.mask[hrr_fg & ~disk].all()
    if rule in ("component", "detached"):  # this HRR-decided region does not touch the ECP's certain foreground
        assert not out.mask[hrr_fg].any()


@pytest.mark.parametrize("rule", ["component", "detached"])
def test_negative_click_rules_keep_a_component_a_tolerant_click_selected(rule: str) -> None:
    """On a vessel tree the ECP may call nothing certain: the HRR-decided structure is one component, and a negative
    click on it must not erase it when a tolerant click said "structure here" (only the click's disk goes)."""
    engine, _, _ = _stub_engine(negative_rule=rule)
    image = _image(400, 600)
    features = engine.encode_image(image)
    hrr_fg = np.zeros((400, 600), bool)
    hrr_fg[150:195, 250:350] = True  # bright part of the uncertain block: HRR foreground, detached from certain fg
    negative = Click(300, 170, ClickKind.NEGATIVE)
    disk = np.zeros((400, 600), np.uint8)
    cv2.circle(disk, (300, 170), 5, 1, thickness=-1)
    disk = disk.astype(bool)
    for tolerant, kept in [(Click(330, 203, ClickKind.TOLERANT), True),  # 8 px below the component
                           (Click(330, 240, ClickKind.TOLERANT), False)]:  # 45 px below: too far to protect it
        out = engine.predict(image, features, Prompts(clicks=(Click(50, 300), tolerant, negative)), None)
        assert not out.mask[disk].any()
        assert out.mask[hrr_fg & ~disk].all() == kept and out.mask[hrr_fg & ~disk].any() == kept
        assert (out.state["dropped_pixels"] == 0) == kept


@pytest.mark.parametrize("rule", ["component", "detached"])
def test_detached_rule_keeps_the_rim_of_certain_foreground(rule: str) -> None:
    """HRR-decided foreground that touches the ECP's certain foreground (an object's rim) is dropped by "component"
    but kept, except the click's disk, by "detached"."""
    engine, _, _ = _stub_engine(uncertain_cols=(0.25, 0.6), negative_rule=rule)
    image = _image(400, 600)
    clicks = (Click(50, 300), Click(300, 170, ClickKind.NEGATIVE))
    out = engine.predict(image, engine.encode_image(image), Prompts(clicks=clicks), None)
    rim = np.zeros((400, 600), bool)
    rim[150:195, 160:350] = True  # bright part of the uncertain block, joined to the certain foreground on its left
    disk = np.zeros((400, 600), np.uint8)
    cv2.circle(disk, (300, 170), 5, 1, thickness=-1)
    assert not out.mask[disk.astype(bool)].any() and out.mask[:, :140].all()
    if rule == "detached":
        assert out.mask[rim & ~disk.astype(bool)].all()
    else:
        assert not out.mask[rim & (np.arange(600)[None] > 180)].any()


def test_grow_threshold_adds_weak_hrr_foreground_near_tolerant_clicks() -> None:
    """With grow_threshold, uncertain pixels the HRR gives more than that (but less than 0.5) join the mask when
    their component comes within tolerant_radius of a tolerant click; precise clicks grow nothing."""
    weak = float(np.log(0.4 / 0.6))  # the stub HRR says 0.4 on dark pixels
    image = _image(400, 600)
    dark_block = np.zeros((400, 600), bool)
    dark_block[205:255, 250:350] = True  # dark part of the uncertain block, well inside
    for clicks, grows in [
        ((Click(50, 300),), False),  # a click far from the block
        ((Click(50, 300), Click(300, 230)), False),  # a precise positive click in it
        ((Click(50, 300), Click(300, 230, ClickKind.TOLERANT)), True),  # a tolerant click in it
        ((Click(50, 300), Click(300, 268, ClickKind.TOLERANT)), True),  # a tolerant click 8 px below it
        ((Click(50, 300), Click(300, 290, ClickKind.TOLERANT)), False),  # a tolerant click 30 px below it
    ]:
        engine, _, _ = _stub_engine(dark_logit=weak, grow_threshold=0.3)
        out = engine.predict(image, engine.encode_image(image), Prompts(clicks=clicks), None)
        assert out.mask[dark_block].all() == grows and out.mask[dark_block].any() == grows
        assert np.array_equal(out.mask, out.probs > 0.5)
        if grows:  # the remap keeps order: bright (HRR ~1) stays above the grown dark pixels
            assert 0.5 < out.probs[dark_block].max() < out.probs[170, 300]
    plain, _, _ = _stub_engine(dark_logit=weak, grow_threshold=None)
    clicks = (Click(50, 300), Click(300, 230, ClickKind.TOLERANT))
    out = plain.predict(image, plain.encode_image(image), Prompts(clicks=clicks), None)
    assert not out.mask[dark_block].any()


def test_hrr_scope_tolerant_runs_the_hrr_only_on_uncertain_components_near_a_tolerant_click() -> None:
    """hrr_scope="tolerant": without a tolerant click near it the uncertain block is split by the ECP's fg / bg odds
    (the stub ECP says 0.5 there: background) and the HRR never runs; a tolerant click in it hands it to the HRR."""
    image = _image(400, 600)
    bright_block = np.zeros((400, 600), bool)
    bright_block[150:195, 250:350] = True  # bright part of the uncertain block, well inside
    engine, _, hrr = _stub_engine(hrr_scope="tolerant")
    out = engine.predict(image, engine.encode_image(image), Prompts(clicks=(Click(50, 300), Click(300, 170))), None)
    assert hrr.shapes == [] and out.state["hrr_box"] is None
    assert out.state["ecp_decided_pixels"] == out.state["uncertain_pixels"] > 0
    assert not out.mask[bright_block].any() and out.probs[bright_block].max() <= 0.5  # the odds, not the HRR's 1
    engine, _, hrr = _stub_engine(hrr_scope="tolerant")
    clicks = (Click(50, 300), Click(300, 170, ClickKind.TOLERANT))
    out = engine.predict(image, engine.encode_image(image), Prompts(clicks=clicks), None)
    assert len(hrr.shapes) == 1 and out.state["ecp_decided_pixels"] == 0
    assert out.mask[bright_block].all()
    paper, _, _ = _stub_engine()  # "all": the same block goes to the HRR whatever the clicks
    out_all = paper.predict(image, paper.encode_image(image), Prompts(clicks=(Click(50, 300), Click(300, 170))), None)
    assert out_all.mask[bright_block].all() and out_all.state["ecp_decided_pixels"] == 0
    with pytest.raises(finecut.FinecutError, match="hrr_scope"):
        _stub_engine(hrr_scope="near")


def test_hrr_scope_session_runs_the_hrr_everywhere_once_a_tolerant_click_is_given() -> None:
    """hrr_scope="session": precise clicks alone leave the uncertain block to the ECP's odds; one tolerant click,
    even far from the block (where "tolerant" would not hand the block over), gives every uncertain pixel to the HRR."""
    image = _image(400, 600)
    bright_block = np.zeros((400, 600), bool)
    bright_block[150:195, 250:350] = True
    engine, _, hrr = _stub_engine(hrr_scope="session")
    out = engine.predict(image, engine.encode_image(image), Prompts(clicks=(Click(50, 300), Click(300, 170))), None)
    assert hrr.shapes == [] and out.state["ecp_decided_pixels"] == out.state["uncertain_pixels"] > 0
    assert not out.mask[bright_block].any()
    far = (Click(50, 300), Click(300, 170), Click(560, 40, ClickKind.TOLERANT))
    for scope, handed_over in [("session", True), ("tolerant", False)]:
        engine, _, hrr = _stub_engine(hrr_scope=scope)
        out = engine.predict(image, engine.encode_image(image), Prompts(clicks=far), None)
        assert (len(hrr.shapes) == 1) == handed_over
        assert out.mask[bright_block].all() == handed_over
        assert (out.state["ecp_decided_pixels"] == 0) == handed_over


def test_unknown_negative_rule_is_refused() -> None:
    with pytest.raises(finecut.FinecutError, match="negative_rule"):
        _stub_engine(negative_rule="erase")


def test_hrr_is_skipped_without_uncertain_pixels() -> None:
    engine, ecp, hrr = _stub_engine()
    ecp_forward = ecp.forward

    def no_uncertain(image: torch.Tensor, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        out = ecp_forward(image, maps)
        logits = out["logits"].clone()
        logits[:, fbu.FBU_UNCERTAIN] = -20
        return {"logits": logits, "features": out["features"]}

    ecp.forward = no_uncertain
    image = _image(100, 140)
    out = engine.predict(image, engine.encode_image(image), Prompts(clicks=(Click(10, 10),)), None)
    assert hrr.shapes == [] and out.state["hrr_box"] is None
    assert set(np.unique(out.probs).tolist()) <= {0.0, 1.0}


def test_tolerant_clicks_change_the_prompt_maps() -> None:
    engine, ecp, _ = _stub_engine()
    image = _image(128, 128)
    features = engine.encode_image(image)
    engine.predict(image, features, Prompts(clicks=(Click(30, 30),)), None)
    engine.predict(image, features, Prompts(clicks=(Click(30, 30), Click(90, 90, ClickKind.TOLERANT))), None)
    plain, tolerant = ecp.maps
    assert plain.shape == tolerant.shape == (1, 4, 64, 64)
    assert plain[0, 3].sum() == 0 and tolerant[0, 3].sum() > 0
    assert torch.equal(plain[0, :3], tolerant[0, :3])
    row, col = torch.nonzero(tolerant[0, 3]).float().mean(0).tolist()
    assert abs(row - 45) < 2 and abs(col - 45) < 2  # (90, 90) at 128 px -> (45, 45) at 64 px


def test_real_tolerant_click_changes_the_prediction() -> None:
    engine = NTClickEngine(_tiny_net(), zoom_in=False)
    image = _image(96, 96)
    features = engine.encode_image(image)
    a = engine.predict(image, features, Prompts(clicks=(Click(30, 30),)), None)
    b = engine.predict(image, features, Prompts(clicks=(Click(30, 30), Click(60, 60, ClickKind.TOLERANT))), None)
    assert not np.array_equal(a.probs, b.probs)


def test_grow_box_rounds_up_and_stays_inside() -> None:
    assert grow_box((100, 50, 150, 90), 128, 400, 600) == (61, 6, 189, 134)
    assert grow_box((0, 0, 10, 10), 128, 100, 600) == (0, 0, 128, 100)
    x0, y0, x1, y1 = grow_box((590, 390, 600, 400), 128, 400, 600)
    assert (x1, y1) == (600, 400) and x1 - x0 == 128 and y1 - y0 == 128


def test_checkpoint_round_trip_and_build_engine(tmp_path: Path) -> None:
    net = _tiny_net()
    config = net.arch_config()
    assert config["arch"] == "ntclick" and "arch" not in config["ecp"] and config["hrr"]["embed_dim"] == 32
    rebuilt = build_model(config)
    assert isinstance(rebuilt, NTClickNet)
    save_checkpoint(tmp_path / "nt", net, config, {"engine": "ntclick"})
    engine = finecut.load_model(tmp_path / "nt.json")
    assert isinstance(engine, NTClickEngine) and engine.config()["model"]["arch"] == "ntclick"
    image = _image(64, 80)
    ref = NTClickEngine(net).predict(image, None, Prompts(clicks=(Click(40, 30),)), None)
    out = engine.predict(image, engine.encode_image(image), Prompts(clicks=(Click(40, 30),)), None)
    assert np.allclose(ref.probs, out.probs, atol=1e-5)
    assert isinstance(build_engine(net, {"engine": "ntclick"}, hrr_margin=8), NTClickEngine)
    # pipeline options stored with the checkpoint are the defaults; the caller's options win over them
    stored = build_engine(net, {"engine": "ntclick", "pipeline": {"negative_rule": "paper", "hrr_margin": 8}})
    assert stored.options["negative_rule"] == "paper" and stored.options["hrr_margin"] == 8
    assert build_engine(net, {"engine": "ntclick", "pipeline": {"hrr_margin": 8}}, hrr_margin=4).options[
        "hrr_margin"] == 4
    with pytest.raises(TypeError, match="unknown NTClick option"):
        NTClickEngine(net, focus=True)
    with pytest.raises(finecut.FinecutError, match="ntclick_ecp"):
        build_model({"arch": "ntclick", "ecp": {"arch": "ntclick_hrr"}})


def _square_scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((120, 160, 3), np.uint8)
    image[:] = (40, 90, 170)
    image[30:90, 50:110] = (230, 200, 40)  # a plain yellow square on blue
    truth = np.zeros((120, 160), bool)
    truth[30:90, 50:110] = True
    return image, truth


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & truth).sum() / (mask | truth).sum())


def test_shipped_ntclick_model_loads_by_name_and_segments() -> None:
    """The shipped ntclick: the EfficientNet ECP (run at 384 px, flip TTA) with an HRR that takes the clicks (grown
    from the previous ntclick's HRR, itself continued from the ViT model's), hrr_scope="session" — a precise click
    leaves the uncertain band to the ECP's odds, a tolerant click hands it to the HRR."""
    assert "ntclick" in finecut.available_models()
    engine = finecut.load_model("ntclick")
    assert isinstance(engine, NTClickEngine)
    checkpoint = engine.checkpoint
    assert checkpoint["model"]["ecp"]["arch"] == "ntclick_ecp_effnet" and engine.options["hrr_scope"] == "session"
    assert engine.options["ecp_size"] == 384 and engine.options["flip_tta"] is True
    assert engine.hrr.config.click_channels == 3 and engine.hrr.click_embed.weight.abs().sum() > 0
    training = checkpoint["training"]
    assert training["ecp"]["step"] >= 600 and training["hrr"]["step"] >= 1000
    assert training["hrr"]["config"]["init_checkpoint"].endswith("ntclick.json")  # the warm start, on record
    assert training["hrr"]["config"]["ntclick_hrr"]["click_iterations"] == 2
    image, truth = _square_scene()
    predictor = Predictor(engine)
    predictor.set_image(image)
    pred = predictor.predict(clicks=[Click(80, 60)])
    assert _iou(pred.mask, truth) > 0.8
    assert pred.state["hrr_box"] is None and pred.state["ecp_decided_pixels"] == pred.state["uncertain_pixels"]
    pred = predictor.predict(clicks=[Click(80, 60), Click(52, 60, ClickKind.TOLERANT)])
    assert _iou(pred.mask, truth) > 0.6
    assert pred.state["hrr_box"] is not None and pred.state["ecp_decided_pixels"] == 0


def test_shipped_vit_ntclick_loads_by_name_and_its_hrr_decides_both_ways() -> None:
    engine = finecut.load_model("ntclick-vit")
    assert isinstance(engine, NTClickEngine) and engine.options["hrr_scope"] == "all"
    training = engine.checkpoint["training"]
    assert training["ecp"]["step"] >= 5600 and training["hrr"]["step"] >= 9200
    image, truth = _square_scene()
    predictor = Predictor(engine)
    predictor.set_image(image)
    pred = predictor.predict(clicks=[Click(80, 60)])
    assert _iou(pred.mask, truth) > 0.6
    assert pred.state["hrr_box"] is not None and pred.state["uncertain_pixels"] > 0
    # the HRR decides the uncertain pixels both ways (the first shipped HRR had collapsed to one constant value)
    band = (pred.probs > 0) & (pred.probs < 1)
    assert band.sum() == pred.state["uncertain_pixels"]
    assert pred.probs[band].min() < 0.1 and pred.probs[band].max() > 0.9


def test_progressive_merge_keeps_the_previous_answer_away_from_the_new_clicks_change() -> None:
    """With a prior mask, ``progressive_merge`` lets only the changed component under the click change the mask: a
    blob of the prior mask that the ECP calls background stays, and so does the HRR's new block elsewhere."""
    image = _image(400, 600)
    prior = np.zeros((400, 600), bool)
    prior[10:30, 500:550] = True
    prompts = Prompts(clicks=(Click(50, 200),), prior_mask=prior)
    plain_engine, _, _ = _stub_engine()
    merge_engine, _, _ = _stub_engine(progressive_merge=True)
    plain = plain_engine.predict(image, plain_engine.encode_image(image), prompts, None)
    merged = merge_engine.predict(image, merge_engine.encode_image(image), prompts, None)
    assert not plain.state["merged"] and merged.state["merged"]
    assert not plain.mask[10:30, 500:550].any() and merged.mask[10:30, 500:550].all()
    assert plain.mask[150:200, 250:350].all() and not merged.mask[150:200, 250:350].any()  # the HRR's bright block
    assert np.array_equal(plain.mask[:, :170], merged.mask[:, :170])  # the clicked component: the new answer
    assert np.array_equal(merged.mask, merged.probs > 0.5)
    # from scratch the merge waits for merge_after clicks
    fresh = merge_engine.predict(image, merge_engine.encode_image(image), Prompts(clicks=(Click(50, 200),)), None)
    assert not fresh.state["merged"]


def test_tolerant_open_radius_lets_the_hrr_decide_near_a_tolerant_click() -> None:
    """``tolerant_open_radius``: the ECP's background near a tolerant click becomes uncertain and the HRR decides it
    (the stub HRR: bright rows foreground); a negative click's disk stays background; off by default."""
    image = _image(400, 600)
    clicks = (Click(500, 100, kind=ClickKind.TOLERANT), Click(530, 100, kind=ClickKind.NEGATIVE))
    default, _, _ = _stub_engine()
    opened, _, _ = _stub_engine(tolerant_open_radius=15.0)
    before = default.predict(image, default.encode_image(image), Prompts(clicks=clicks), None)
    after = opened.predict(image, opened.encode_image(image), Prompts(clicks=clicks), None)
    yy, xx = np.mgrid[:400, :600]
    disk = (yy - 100) ** 2 + (xx - 500) ** 2 <= 15**2
    negative = (yy - 100) ** 2 + (xx - 530) ** 2 <= 5**2
    assert before.state["opened_pixels"] == 0 and not before.mask[disk].any()
    assert after.state["opened_pixels"] == int((disk & ~negative).sum())
    assert after.mask[disk & ~negative].all() and not after.mask[negative].any()
    assert not after.mask[~disk & (xx > 400)].any()  # nothing else opened


def test_lower_near_tolerant_passes_weak_uncertain_pixels_only_near_tolerant_clicks() -> None:
    labels = np.full((60, 80), fbu.FBU_UNCERTAIN, np.uint8)
    labels[:, 70:] = fbu.FBU_BACKGROUND
    probs = np.full((60, 80), 0.2, np.float32)
    probs[:, :10] = 0.05  # below the local threshold
    probs[0, 0] = 0.9
    clicks = (Click(40, 30, kind=ClickKind.TOLERANT), Click(10, 30, kind=ClickKind.POSITIVE))
    yy, xx = np.mgrid[:60, :80]
    near = (yy - 30) ** 2 + (xx - 40) ** 2 <= 12**2
    untouched = probs.copy()
    assert not lower_near_tolerant(labels, probs, clicks, None, 0.5, 12.0).any()
    passed = lower_near_tolerant(labels, probs, clicks, 0.1, 0.5, 12.0)
    assert np.array_equal(passed, near)  # every pixel near the tolerant click, none near the precise one
    assert np.all(probs[near] > 0.5) and np.array_equal(probs[~near], untouched[~near])
    far_click = (Click(75, 30, kind=ClickKind.TOLERANT),)  # only background and weak pixels around it
    probs = untouched.copy()
    passed = lower_near_tolerant(labels, probs, far_click, 0.1, 0.5, 3.0)
    assert not passed.any() and np.array_equal(probs, untouched)


def test_flip_tta_averages_the_ecp_with_its_mirrored_call() -> None:
    """``flip_tta``: the ECP runs twice, the second time on mirrored prompt maps, and its logits are averaged after
    flipping back — the stand-in ECP ignores its input, so the average of its left strip and the mirrored one is
    mirror-symmetric, and so is the mask (the plain call's is not)."""
    image = _image(400, 600)
    plain_engine, plain_ecp, _ = _stub_engine()
    flip_engine, flip_ecp, _ = _stub_engine(flip_tta=True)
    prompts = Prompts(clicks=(Click(50, 200),))
    plain = plain_engine.predict(image, plain_engine.encode_image(image), prompts, None)
    flipped = flip_engine.predict(image, flip_engine.encode_image(image), prompts, None)
    assert len(plain_ecp.maps) == 1 and len(flip_ecp.maps) == 2
    torch.testing.assert_close(flip_ecp.maps[1], flip_ecp.maps[0].flip(-1))
    assert not plain.mask[:, 450:].any() and plain.mask[:, :150].all()
    assert np.array_equal(flipped.mask[:, :150], flipped.mask[:, ::-1][:, :150])


class ClickSpyHRR(SpyHRR):
    """SpyHRR with a click input: records the click maps it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.config = HRRConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_HRR.items()},
                                click_channels=3)
        self.clicks: list[torch.Tensor] = []

    def forward(self, image: torch.Tensor, fbu_map: torch.Tensor, region: torch.Tensor | None = None,
                clicks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        assert clicks is not None and clicks.shape == (image.shape[0], 3, *image.shape[-2:])
        self.clicks.append(clicks)
        return super().forward(image, fbu_map, region)


def test_an_hrr_with_a_click_input_gets_the_clicks_over_its_box() -> None:
    net = _tiny_net()
    net.ecp, net.hrr = PatternECP(), ClickSpyHRR()
    engine = NTClickEngine(net, zoom_in=False, click_radius=5.0)
    image = _image(400, 600)
    clicks = (Click(50, 200), Click(300, 190, ClickKind.TOLERANT), Click(520, 40, ClickKind.NEGATIVE))
    out = engine.predict(image, engine.encode_image(image), Prompts(clicks=clicks), None)
    x0, y0, x1, y1 = out.state["hrr_box"]
    (maps,) = net.hrr.clicks
    assert maps.shape[-2:] == (y1 - y0, x1 - x0)
    tolerant = maps[0, 2].numpy() > 0
    ys, xs = np.nonzero(tolerant)
    assert (ys + y0).mean() == pytest.approx(190) and (xs + x0).mean() == pytest.approx(300)
    assert tolerant.sum() == (np.hypot(*np.mgrid[-5:6, -5:6]) <= 5).sum()  # the whole disk lies in the box
    assert not maps[0, 0].any() or (maps[0, 0].nonzero()[:, 1] + x0).max() <= 55  # the positive click's disk, if seen
    assert not maps[0, 1].any()  # the negative click lies outside the box
    # a real tiny HRR with a click input runs through the engine too
    torch.manual_seed(0)
    real = build_ntclick(ecp=TINY_ECP, hrr={**TINY_HRR, "click_channels": 3}).eval()
    torch.nn.init.normal_(real.hrr.click_embed.weight, std=0.5)
    pred = NTClickEngine(real, hrr_scope="all").predict(image, None, Prompts(clicks=clicks), None)
    assert pred.mask.shape == (400, 600)
