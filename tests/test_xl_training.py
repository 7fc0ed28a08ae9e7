"""FocalClick-XL training (``finecut.training.focalclick_xl``): the three stages on a tiny network and a tiny synthetic
object bank, what each stage may change, checkpoints and their recorded stages; the training-time interaction
simulators; the ``[focalclick_xl]`` config section."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_training import make_object_folder

import finecut
from finecut.datasets import open_dataset
from finecut.errors import FinecutError
from finecut.models.checkpoint import load_checkpoint, read_checkpoint_config
from finecut.models.registry import build_model
from finecut.prompts import CropTransform, scribble_maps
from finecut.training.config import TrainConfig
from finecut.training.focalclick_xl import FOCALCLICK_XL, trained_stages, tuned_forms
from finecut.training.history import inherited_history
from finecut.training.interactions import (
    SCRIBBLE_KINDS,
    correction_scribble,
    initial_scribbles,
    simulate_box,
    simulate_coarse_mask,
    simulate_scribble,
)
from finecut.training.objects import build_object_bank
from finecut.training.trainer import METHODS, train

TINY_MODEL = {
    "arch": "focalclick_xl",
    "context_net": {"type": "efficientnet_lite0", "out_channels": 16, "input_size": 64},
    "object_net": {"head_channels": 16},
    "detail_net": {"stages": [[1, 8, 1, 1], [4, 16, 1, 2], [4, 24, 1, 2]], "stem_channels": 8,
                   "decoder": [16, 12, 8]},
}


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("xl-data")
    folder = make_object_folder(root / "data")
    bank = build_object_bank([open_dataset(folder)], max_side=96, progress=False, names=[str(folder)])
    bank.save(root / "bank.npz")
    return folder, root / "bank.npz"


def tiny_config(run_dir: Path, bank: tuple[Path, Path], steps: int, xl: dict, init: str = "",
                batch_size: int = 2) -> TrainConfig:
    folder, path = bank
    return TrainConfig.from_dict({
        "run_dir": str(run_dir), "model": TINY_MODEL, "pretrained": "none", "init_checkpoint": init,
        "data": {"sources": [str(folder)], "weights": [1.0], "bank": str(path), "max_side": 96, "val_fraction": 0.0},
        "steps": steps, "batch_size": batch_size, "size": 64, "warmup_steps": 1, "threads": 1, "lr": 1e-3,
        "log_every": 1, "checkpoint_every": 100, "val_every": 1000, "max_iterative_clicks": 1,
        "iterative_probability": 1.0, "focalclick_xl": xl,
    })


def initial_state(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights a run of ``cfg`` starts from: the trainer's seeding, build, warm start and the method's prepare."""
    from finecut.training.trainer import load_initial_weights

    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model)
    load_initial_weights(net, cfg)
    net = FOCALCLICK_XL.prepare(net, cfg)
    FOCALCLICK_XL._frozen.clear()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def final_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    net, doc = load_checkpoint(run_dir / "last")
    return net.state_dict(), doc


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def samples_per_s(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in records if "samples_per_s" in r][-1]["samples_per_s"]


@pytest.fixture(scope="module")
def object_run(bank_path: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    """Three steps of the object stage, warm-started from ImageNet (context) and focalclick-lite0-v2 (Object-Net)."""
    run_dir = tmp_path_factory.mktemp("xl-object") / "run"
    cfg = tiny_config(run_dir, bank_path, 3, {"stage": "object", "whole_image_probability": 0.5})
    train(cfg, progress=False)
    return cfg, run_dir


# ----------------------------------------------------------------------------------------------------------- stages


def test_method_is_registered_for_the_xl_arch() -> None:
    cfg = TrainConfig.from_dict({"model": {"arch": "focalclick_xl"}, "pretrained": "none"})
    assert cfg.method == "focalclick_xl" and METHODS["focalclick_xl"] is FOCALCLICK_XL
    assert FOCALCLICK_XL.engine("focalclick_xl") == "focalclick_xl"
    assert cfg.focalclick_xl is not None and cfg.focalclick_xl.stage == "object"


def test_object_stage_trains_object_net_clicks_layer_and_context_neck(object_run: tuple[TrainConfig, Path]) -> None:
    cfg, run_dir = object_run
    after, doc = final_state(run_dir)
    assert doc["engine"] == "focalclick_xl" and doc["training"]["step"] == 3
    assert trained_stages(doc) == ["object"]
    moved = changed(initial_state(cfg), after)
    assert any(k.startswith("object.backbone.") for k in moved) and any(k.startswith("object.head.") for k in moved)
    assert any(k.startswith("object.context_proj.") for k in moved)
    assert any(k.startswith("prompting.clicks.") for k in moved)
    assert any(k.startswith(("context.lateral", "context.smooth")) for k in moved)
    frozen = [k for k in moved if k.startswith(("detail.", "context.backbone.", "prompting.box.",
                                                 "prompting.scribbles.", "prompting.coarse_mask."))]
    assert frozen == []
    print(f"\nobject stage: {samples_per_s(run_dir)} samples/s (tiny net, 64 px patches, 64 px context)")


def test_object_stage_warm_start_copies_the_shipped_segmentor(object_run: tuple[TrainConfig, Path]) -> None:
    cfg, _ = object_run
    start = initial_state(cfg)
    from finecut.models.focalclick_xl import read_focalclick_segmentor
    from finecut.training.focalclick_xl import checkpoint_path

    source, _ = read_focalclick_segmentor(checkpoint_path("focalclick-lite0-v2"))
    key = "segmentor.backbone.stem.0.weight" if "segmentor.backbone.stem.0.weight" in source else next(
        k for k in source if k.startswith("segmentor.backbone."))
    assert torch.equal(start["object." + key[len("segmentor."):]], source[key])


def test_detail_stage_without_init_checkpoint_starts_from_the_shipped_segmentor(
        bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    """The detail stage starts the chain: its checkpoint must carry the warm-started Object-Net for the stages after
    it, not a randomly initialised one."""
    cfg = tiny_config(tmp_path / "detail", bank_path, 1, {"stage": "detail"})
    start = initial_state(cfg)
    from finecut.models.focalclick_xl import read_focalclick_segmentor
    from finecut.training.focalclick_xl import checkpoint_path

    source, _ = read_focalclick_segmentor(checkpoint_path("focalclick-lite0-v2"))
    key = next(k for k in source if k.startswith("segmentor.backbone."))
    assert torch.equal(start["object." + key[len("segmentor."):]], source[key])


def test_object_stage_rebases_a_trained_xl_on_a_segmentor(object_run: tuple[TrainConfig, Path],
                                                          bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    """``rebase_object``: the init checkpoint's Object-Net and clicks layer are replaced by a FocalClick segmentor's,
    the context projections restart at zero, and the Context-Net, Detail-Net and other layers are the checkpoint's."""
    from finecut.models.checkpoint import save_checkpoint

    _, object_dir = object_run
    seg_model = {"arch": "focalclick", "backbone": "efficientnet_lite0", "head": "fpn", "head_channels": 16,
                 "prompt_channels": 4, "refiner_channels": 8}
    torch.manual_seed(5)
    segmentor = build_model(seg_model)
    save_checkpoint(tmp_path / "seg", segmentor, seg_model)
    cfg = tiny_config(tmp_path / "rebase", bank_path, 1,
                      {"stage": "object", "rebase_object": str(tmp_path / "seg"), "rebase_forms": ["clicks"]},
                      init=str(object_dir / "last"))
    start = initial_state(cfg)
    loaded, _ = final_state(object_dir)
    source = segmentor.state_dict()
    for key, value in start.items():
        if key.startswith(("object.backbone.", "object.head.")):
            assert torch.equal(value, source["segmentor." + key[len("object."):]]), key
        elif key.startswith("object.context_proj."):
            assert not value.any(), key
        elif key.startswith("prompting.clicks."):
            continue  # the segmentor's click encoder, its first conv's columns picked by name
        else:
            assert torch.equal(value, loaded[key]), key
    assert torch.equal(start["prompting.clicks.net.2.weight"], source["segmentor.click_fusion.net.2.weight"])
    # a source whose Object-Net shapes differ is refused by name, not half-loaded
    wide = {**seg_model, "head_channels": 24}
    save_checkpoint(tmp_path / "wide", build_model(wide), wide)
    with pytest.raises(FinecutError, match="rebase_object .*no counterpart"):
        initial_state(tiny_config(tmp_path / "r2", bank_path, 1, {"stage": "object", "rebase_object":
                                                                  str(tmp_path / "wide")}, init=str(object_dir / "last")))


def test_detail_stage_grows_a_residual_primitive_input_on_a_trained_detail_net(
        object_run: tuple[TrainConfig, Path], bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    """``detail_net = {primitive_input, residual}`` from a checkpoint without them: every trained weight is the
    checkpoint's but the new primitive convolutions (zero) and the classifier (zeroed: it now predicts a correction),
    so the run's first Detail-Net returns the primitive; the detail stage then trains only ``detail.*``, the new
    weights included, and the checkpoint reloads with the option."""
    _, object_dir = object_run
    model = {**TINY_MODEL, "detail_net": {**TINY_MODEL["detail_net"], "primitive_input": True, "residual": True}}
    cfg = tiny_config(tmp_path / "residual", bank_path, 2, {"stage": "detail", "coarse_primitive_probability": 0.5},
                      init=str(object_dir / "last"))
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "model": model})
    start = initial_state(cfg)
    loaded, _ = final_state(object_dir)
    for key, value in start.items():
        if key.startswith(("detail.primitive.", "detail.classifier.")):
            assert not value.any(), key
        else:
            assert torch.equal(value, loaded[key]), key
    net = build_model(model).eval()
    net.load_state_dict(start)
    primitive = torch.rand(2, 1, 24, 24) * 0.8 + 0.1
    trimap = torch.cat([torch.zeros(2, 2, 24, 24), torch.ones(2, 1, 24, 24), primitive], dim=1)
    with torch.no_grad():
        alpha = net.forward_detail(torch.randn(2, 3, 24, 24), trimap)["alpha"]
    assert torch.allclose(alpha, primitive, atol=1e-5)
    train(cfg, progress=False)
    after, doc = final_state(tmp_path / "residual")
    moved = changed(start, after)
    assert moved and all(k.startswith("detail.") for k in moved)
    assert any(k.startswith("detail.primitive.") for k in moved) and any(k.startswith("detail.classifier.") for k in moved)
    assert doc["model"]["detail_net"]["residual"] is True
    # a model config that differs in anything else is still refused
    other = {**model, "object_net": {"head_channels": 24}}
    with pytest.raises(FinecutError, match="init_checkpoint"):
        initial_state(TrainConfig.from_dict({**cfg.to_dict(), "model": other}))


def test_run_history_and_card_name_the_rebase() -> None:
    from finecut.training.card import _history_section
    from finecut.training.history import run_summary

    config = {"steps": 10, "focalclick_xl": {"stage": "object", "rebase_object": "focalclick-lite0-whole8",
                                             "joint_forms": {"box": 0.4}}}
    record = {"step": 10, "samples_seen": 80, "train_seconds": 60.0, "processes": 1, "config": config}
    summary = run_summary(record, "runs/x/last")
    assert summary["stage"] == "object+box" and summary["rebase"] == "focalclick-lite0-whole8"
    assert "rebase" not in run_summary({**record, "config": {"focalclick_xl": {"stage": "object"}}})
    card = "\n".join(_history_section({**record, "history": [summary]}))
    assert card.count("Object-Net rebased on `focalclick-lite0-whole8`") == 2  # the earlier run and this one


def test_a_warm_restart_keeps_the_init_checkpoints_inference_settings(object_run: tuple[TrainConfig, Path],
                                                                       bank_path: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    """A run from a checkpoint with chosen inference settings (``pipeline``: the shipped XL runs without its Detail-Net)
    writes them into its own checkpoints, so evaluating the run's checkpoint measures the same pipeline."""
    from finecut.models.checkpoint import save_checkpoint

    _, object_dir = object_run
    net, doc = load_checkpoint(object_dir / "last")
    assert "pipeline" not in doc  # a run from scratch has no settings of its own
    meta = {k: v for k, v in doc.items() if k not in ("format_version", "model", "inputs")}
    save_checkpoint(tmp_path / "chosen", net, doc["model"], {**meta, "pipeline": {"detail": False, "box_refine": 2}})
    run_dir = train(tiny_config(tmp_path / "next", bank_path, 1, {"stage": "object"}, init=str(tmp_path / "chosen")),
                    progress=False)
    _, after = final_state(run_dir)
    assert after["pipeline"] == {"detail": False, "box_refine": 2}
    engine = finecut.load_model(str(run_dir / "last"))
    assert engine.options["detail"] is False and engine.options["box_refine"] == 2


def test_rebase_options_are_checked(bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(FinecutError, match="rebase_object replaces the Object-Net"):
        tiny_config(tmp_path / "a", bank_path, 1, {"stage": "detail", "rebase_object": "focalclick-lite0-whole8"})
    with pytest.raises(FinecutError, match="rebase_forms"):
        tiny_config(tmp_path / "b", bank_path, 1, {"stage": "object", "rebase_forms": ["lasso"]})


def test_detail_stage_changes_only_the_detail_net(object_run: tuple[TrainConfig, Path], bank_path: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    _, object_dir = object_run
    cfg = tiny_config(tmp_path / "detail", bank_path, 3, {"stage": "detail", "synthetic_side": 96},
                      init=str(object_dir / "last"), batch_size=8)
    start = time.time()
    run_dir = train(cfg, progress=False)
    wall = time.time() - start
    after, doc = final_state(run_dir)
    moved = changed(initial_state(cfg), after)
    assert moved and all(k.startswith("detail.") for k in moved)
    assert trained_stages(doc) == ["object", "detail"]
    assert [r.get("stage") for r in doc["training"]["history"]] == ["object"]
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert {"alpha_l1", "alpha_mse", "alpha_grad", "composition"} <= set(records[-2])
    print(f"\ndetail stage: {samples_per_s(run_dir)} samples/s of 64² patches ({wall:.1f} s for 3 x 8)")


def test_detail_patches_of_the_object_nets_own_primitives(bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    """``object_primitive_fraction``: patches of the pipeline's own detail windows on bank objects — the image, the
    ground truth's coverage, the primitive with low-confidence pixels (what the windows are chosen for) and the click
    disks at the patch size — and a detail stage on them alone changes only the Detail-Net (the frozen parts' BatchNorm
    statistics included, although the pipeline runs them for every object)."""
    from finecut.models.checkpoint import save_checkpoint
    from finecut.training.objects import ObjectBank
    from finecut.training.xl_primitives import PrimitivePatchSampler

    torch.manual_seed(0)
    net = build_model(TINY_MODEL)
    with torch.no_grad():  # a fresh tiny net with its logits scaled down: probabilities near 0.5, windows everywhere
        head = [m for m in net.object.head.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1][-1]
        head.weight.mul_(0.05)
        head.bias.zero_()
    save_checkpoint(tmp_path / "fresh", net, dict(TINY_MODEL))
    bank = ObjectBank.load(bank_path[1])
    sampler = PrimitivePatchSampler(net, bank, np.arange(len(bank)), {0: 1.0}, 16, {"object_size": 64}, 2, 3.0, 1,
                                    np.random.default_rng(0))
    patches = [sampler.sample() for _ in range(12)]
    for patch in patches:
        assert patch.image.shape == (16, 16, 3) and patch.image.dtype == np.uint8
        assert patch.alpha.shape == patch.primitive.shape == (16, 16) and patch.clicks.shape == (2, 16, 16)
        assert 0 <= patch.alpha.min() and patch.alpha.max() <= 1 and 0 <= patch.primitive.min() <= 1
    assert all(((p.primitive > 0.1) & (p.primitive < 0.9)).any() for p in patches)
    assert any(p.clicks.any() for p in patches) and any(0 < p.alpha.mean() < 1 for p in patches)
    cfg = tiny_config(tmp_path / "own", bank_path, 2, {"stage": "detail", "object_primitive_fraction": 1.0,
                                                       "primitive_max_clicks": 2, "detail_size": 16},
                      init=str(tmp_path / "fresh"), batch_size=4)
    assert net.training and all(m.training for m in net.modules())  # the sampler ran it in eval mode, then gave it back
    run_dir = train(cfg, progress=False)
    moved = changed(initial_state(cfg), final_state(run_dir)[0])
    assert moved and all(k.startswith("detail.") for k in moved)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(FinecutError, match="object_primitive_fraction"):
            tiny_config(tmp_path / "bad", bank_path, 1, {"stage": "detail", "object_primitive_fraction": bad})
    with pytest.raises(FinecutError, match="primitive_max_clicks"):
        tiny_config(tmp_path / "bad", bank_path, 1, {"stage": "detail", "primitive_max_clicks": 0})


@pytest.mark.parametrize("form", ["box", "scribbles", "coarse_mask"])
def test_prompting_stage_changes_only_that_forms_layer(form: str, object_run: tuple[TrainConfig, Path],
                                                       bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    _, object_dir = object_run
    cfg = tiny_config(tmp_path / form, bank_path, 2, {"stage": "prompting", "form": form},
                      init=str(object_dir / "last"))
    loaded, _ = final_state(object_dir)
    start = initial_state(cfg)
    # the form's layer starts from the clicks layer (never tuned before); everything else as loaded
    for key, value in start.items():
        if key.startswith(f"prompting.{form}."):
            assert torch.equal(value, loaded[key.replace(f"prompting.{form}.", "prompting.clicks.")])
        else:
            assert torch.equal(value, loaded[key])
    run_dir = train(cfg, progress=False)
    after, doc = final_state(run_dir)
    moved = changed(start, after)
    assert moved and all(k.startswith(f"prompting.{form}.") for k in moved)
    assert trained_stages(doc) == ["object", f"prompting:{form}"]
    print(f"\nprompting:{form}: {samples_per_s(run_dir)} samples/s")


def test_prompting_layer_is_not_copied_again_once_tuned(object_run: tuple[TrainConfig, Path],
                                                         bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    _, object_dir = object_run
    first = train(tiny_config(tmp_path / "box1", bank_path, 1, {"stage": "prompting", "form": "box"},
                              init=str(object_dir / "last")), progress=False)
    tuned, _ = final_state(first)
    again = tiny_config(tmp_path / "box2", bank_path, 1, {"stage": "prompting", "form": "box"},
                        init=str(first / "last"))
    start = initial_state(again)
    assert all(torch.equal(start[k], tuned[k]) for k in start)  # auto: kept, not overwritten by clicks
    assert not torch.equal(start["prompting.box.net.0.weight"], start["prompting.clicks.net.0.weight"])
    forced = tiny_config(tmp_path / "box3", bank_path, 1,
                         {"stage": "prompting", "form": "box", "copy_clicks": "always"}, init=str(first / "last"))
    assert torch.equal(initial_state(forced)["prompting.box.net.0.weight"], tuned["prompting.clicks.net.0.weight"])


def test_object_stage_trains_joint_forms_with_their_layers(object_run: tuple[TrainConfig, Path],
                                                          bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    """joint_forms: some object-stage steps train the Object-Net on boxes (and scribbles) through their own layers."""
    _, object_dir = object_run
    joint = {"stage": "object", "joint_forms": {"box": 0.5, "scribbles": 0.3}}
    cfg = tiny_config(tmp_path / "joint", bank_path, 4, joint, init=str(object_dir / "last"))
    start = initial_state(cfg)
    used: list[str] = []
    from finecut.models.focalclick_xl import FocalClickXLNet

    original = FocalClickXLNet.forward_object

    def spy(self, image, prompt_maps, form="clicks", context=None, boxes=None):  # noqa: ANN001, ANN202
        if torch.is_grad_enabled():
            used.append(form)
        return original(self, image, prompt_maps, form, context, boxes)

    FocalClickXLNet.forward_object = spy
    try:
        run_dir = train(cfg, progress=False)
    finally:
        FocalClickXLNet.forward_object = original
    after, doc = final_state(run_dir)
    moved = changed(start, after)
    assert len(used) == 4 and set(used) <= {"clicks", "box", "scribbles"} and len(set(used)) > 1
    for form in set(used):  # each form a step trained moved its own prompting layer ...
        assert any(k.startswith(f"prompting.{form}.") for k in moved)
    assert not any(k.startswith("prompting.coarse_mask.") for k in moved)  # ... and no other form's
    assert any(k.startswith("object.") for k in moved) and not any(k.startswith("detail.") for k in moved)
    assert trained_stages(doc)[-1] == "object+box+scribbles"
    assert tuned_forms(trained_stages(doc)) == {"box", "scribbles"}
    # a later prompting stage keeps the jointly trained box layer (not overwritten by the clicks layer)
    later = tiny_config(tmp_path / "box", bank_path, 1, {"stage": "prompting", "form": "box"},
                        init=str(run_dir / "last"))
    assert torch.equal(initial_state(later)["prompting.box.net.0.weight"], after["prompting.box.net.0.weight"])
    with pytest.raises(FinecutError, match="joint_forms"):
        tiny_config(tmp_path / "bad", bank_path, 1, {"stage": "prompting", "joint_forms": {"box": 0.2}})
    with pytest.raises(FinecutError, match="joint_forms"):
        tiny_config(tmp_path / "bad", bank_path, 1, {"stage": "object", "joint_forms": {"box": 0.7, "scribbles": 0.4}})
    with pytest.raises(FinecutError, match="joint_forms"):
        tiny_config(tmp_path / "bad", bank_path, 1, {"stage": "object", "joint_forms": {"clicks": 0.2}})


def test_prompting_stage_needs_a_pretrained_network(bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "p", bank_path, 1, {"stage": "prompting", "form": "box"})
    with pytest.raises(FinecutError, match="init_checkpoint"):
        train(cfg, progress=False)


def test_stage_is_in_the_run_history(object_run: tuple[TrainConfig, Path]) -> None:
    _, run_dir = object_run
    history = inherited_history(read_checkpoint_config(run_dir / "last"), "xl-object")
    assert history[-1]["stage"] == "object" and history[-1]["name"] == "xl-object"


def test_validation_engine_is_the_xl_pipeline_when_installed(object_run: tuple[TrainConfig, Path]) -> None:
    cfg, run_dir = object_run
    net, _ = load_checkpoint(run_dir / "last")
    net.train()
    engine = FOCALCLICK_XL.validation_engine(net, cfg)
    assert net.training  # building the engine leaves the training mode alone
    try:
        import finecut.pipelines.focalclick_xl  # noqa: F401
    except ImportError:
        assert engine is None
    else:
        assert engine is not None and engine.name == "focalclick_xl"
    prompting = TrainConfig.from_dict({**cfg.to_dict(), "focalclick_xl": {"stage": "prompting", "form": "box"}})
    assert FOCALCLICK_XL.validation_engine(net, prompting) is None


def test_held_out_validation_runs_the_xl_pipeline(bank_path: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("finecut.pipelines.focalclick_xl")
    cfg = tiny_config(tmp_path / "val", bank_path, 1, {"stage": "object", "object_init": "", "context_pretrained": "none"})
    cfg.data.val_fraction, cfg.val_every, cfg.val_objects, cfg.val_clicks = 0.5, 1, 2, 2
    run_dir = train(cfg, progress=False)
    doc = json.loads((run_dir / "last.json").read_text())
    assert 0.0 <= doc["training"]["validation"]["val_miou@1"] <= 1.0
    import finecut

    assert type(finecut.load_model(run_dir / "last.json")).__name__ == "FocalClickXLEngine"


# ------------------------------------------------------------------------------------------------------- simulators


def ellipse_mask(h: int = 80, w: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - 40) / 22.0) ** 2 + ((xx - 50) / 30.0) ** 2 <= 1.0


def test_simulated_boxes_vary_and_stay_in_the_image() -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([simulate_box((20, 18, 80, 62), (80, 96), rng, jitter=0.1) for _ in range(200)])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 80).all()
    assert (boxes[:, 2] - boxes[:, 0] >= 2).all() and (boxes[:, 3] - boxes[:, 1] >= 2).all()
    assert boxes[:, 0].std() > 0.5 and abs(np.median(boxes[:, 0]) - 20) < 5


def test_simulated_coarse_masks_span_a_range_of_quality() -> None:
    rng = np.random.default_rng(1)
    gt = ellipse_mask()
    ious = []
    for _ in range(60):
        coarse = simulate_coarse_mask(gt, rng)
        assert coarse.dtype == bool and coarse.shape == gt.shape and coarse.any()
        ious.append((coarse & gt).sum() / (coarse | gt).sum())
    assert min(ious) < 0.8 and max(ious) > 0.9


@pytest.mark.parametrize("kind", SCRIBBLE_KINDS)
def test_simulated_scribbles_lie_in_their_region(kind: str) -> None:
    rng = np.random.default_rng(2)
    gt = ellipse_mask()
    for _ in range(10):
        s = simulate_scribble(gt, True, rng, kinds=(kind,))
        assert s is not None and s.positive and 3 <= s.width <= 7 and len(s.points) >= 2
        drawn = scribble_maps([s], CropTransform.identity(*gt.shape))[0] > 0
        assert drawn.any() and (drawn & ~gt).sum() <= 0.05 * drawn.sum()


def test_initial_and_correction_scribbles() -> None:
    rng = np.random.default_rng(3)
    gt = ellipse_mask()
    strokes = initial_scribbles(gt, rng)
    assert any(s.positive for s in strokes)
    pred = np.zeros_like(gt)  # everything missed: a positive correction
    s = correction_scribble(gt, pred, rng)
    assert s is not None and s.positive
    pred = gt.copy()
    pred[:, :10] = True  # a false-positive strip: a negative correction
    s = correction_scribble(gt, pred, rng)
    assert s is not None and not s.positive
    assert correction_scribble(gt, gt, rng) is None


# --------------------------------------------------------------------------------------------------------- config


def test_xl_config_section_is_checked() -> None:
    base = {"model": {"arch": "focalclick_xl"}, "pretrained": "none"}
    with pytest.raises(FinecutError, match="stage"):
        TrainConfig.from_dict({**base, "focalclick_xl": {"stage": "everything"}})
    with pytest.raises(FinecutError, match="form"):
        TrainConfig.from_dict({**base, "focalclick_xl": {"stage": "prompting", "form": "clicks"}})
    with pytest.raises(FinecutError, match="unknown"):
        TrainConfig.from_dict({**base, "focalclick_xl": {"stagee": "object"}})
    with pytest.raises(FinecutError, match='pretrained = "none"'):
        TrainConfig.from_dict({"model": {"arch": "focalclick_xl"}})
    with pytest.raises(FinecutError, match="focalclick_xl"):
        TrainConfig.from_dict({"model": {"arch": "focalclick"}, "pretrained": "none", "focalclick_xl": {}})
    cfg = TrainConfig.from_dict({**base, "focalclick_xl": {"stage": "detail"}})
    assert cfg.to_dict()["focalclick_xl"]["stage"] == "detail" and "focalclick" not in cfg.to_dict()
    assert TrainConfig.from_dict(cfg.to_dict()).focalclick_xl == cfg.focalclick_xl


@pytest.mark.parametrize("stem", ["object", "detail", "prompting-box", "prompting-scribbles", "prompting-coarse"])
def test_shipped_xl_configs(stem: str) -> None:
    path = Path(__file__).resolve().parents[1] / "configs" / f"focalclick-xl-{stem}.toml"
    cfg = TrainConfig.from_file(path)
    options = cfg.focalclick_xl
    assert options is not None and cfg.method == "focalclick_xl"
    assert options.stage == stem.split("-")[0]
    if options.stage == "prompting":
        assert options.form == {"box": "box", "scribbles": "scribbles", "coarse": "coarse_mask"}[stem.split("-")[1]]
    chain = ["detail", "object", "prompting-box", "prompting-scribbles", "prompting-coarse"]  # each from the one before
    before = chain.index(stem) - 1
    assert cfg.init_checkpoint == ("" if before < 0 else f"runs/focalclick-xl-{chain[before]}/last")
    objects = TrainConfig.from_file(path.with_name("focalclick-xl-object.toml"))
    assert cfg.model == objects.model and cfg.data.sources == objects.data.sources
