"""ONNX export and the ONNX Runtime engines (docs/onnx.md): graphs against PyTorch on random and real inputs, the full
click protocol on both runtimes, ``model.json``, the option's errors, and the docs' NumPy + onnxruntime example run
in a process without torch. Tests that need ``onnxruntime`` / ``onnx`` (the ``finecut[onnx]`` extra) skip without
them; the NumPy forms of the operations around the graphs are tested either way."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import finecut
from finecut.errors import FinecutError
from finecut.evaluation import next_click
from finecut.model_inputs import normalize
from finecut.models.attention import neighborhood_attention_torch
from finecut.models.roi_align import roi_align as torch_roi_align
from finecut.onnx import ops
from finecut.onnx.graphs import neighborhood_attention_gather
from finecut.pipelines.focalclick import _component_box
from finecut.pipelines.geometry import component_at, mask_box

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DOC = ROOT / "docs" / "onnx.md"


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


needs_ort = pytest.mark.skipif(not (_have("onnxruntime") and _have("onnx")),
                               reason="onnx / onnxruntime not installed (pip install 'finecut[onnx]')")
needs_data = pytest.mark.skipif(not (DATA / "benchmarks" / "GrabCut").is_dir(), reason=f"no GrabCut under {DATA}")


# ------------------------------------------------------------------------------------ without onnxruntime


@pytest.mark.parametrize("height,width,kernel", [(7, 7, 7), (8, 13, 7), (16, 9, 7), (6, 11, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_gather_neighborhood_attention_equals_the_tiled_one(height: int, width: int, kernel: int, bias: bool) -> None:
    gen = torch.Generator().manual_seed(height * width + kernel)
    q, k, v = (torch.randn(2, 3, height, width, 8, generator=gen) for _ in range(3))
    rpb = torch.randn(3, 2 * kernel - 1, 2 * kernel - 1, generator=gen) if bias else None
    expected = neighborhood_attention_torch(q, k, v, kernel, rpb=rpb)
    assert torch.allclose(neighborhood_attention_gather(q, k, v, kernel, rpb=rpb), expected, atol=1e-5)


BOXES = [((64, 48), (10.3, 5.2, 150.7, 200.1), (128, 96), 0.25), ((256, 192), (10, 10, 100, 150), (128, 96), 1.0),
         ((10, 10), (0, 0, 10, 10), (8, 8), 1.0), ((480, 854), (100, 50, 400, 300), (256, 256), 1.0),
         ((480, 854), (0, 0, 1, 1), (8, 8), 1.0), ((30, 40), (35, 25, 40, 30), (9, 7), 1.0)]


@pytest.mark.parametrize("size,box,out,scale", BOXES)
def test_separable_roi_align_equals_grid_sample(size: tuple[int, int], box: tuple, out: tuple[int, int],
                                                scale: float) -> None:
    from finecut.onnx.runtime import roi_align

    rng = np.random.default_rng(0)
    features = rng.standard_normal((1, 5, *size)).astype(np.float32)
    boxes = torch.tensor([box], dtype=torch.float32)
    expected = torch_roi_align(torch.from_numpy(features), boxes, out, spatial_scale=scale).numpy()
    assert np.abs(ops.roi_align(features, box, out, spatial_scale=scale) - expected).max() < 1e-4
    got = roi_align(torch.from_numpy(features), boxes, out, spatial_scale=scale).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    # the uint8 image itself: sampled, then normalised
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    expected = torch_roi_align(normalize(image), boxes, out, spatial_scale=scale).numpy()
    got = roi_align(image, boxes, out, spatial_scale=scale).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


def test_focus_component_by_flood_fill_equals_the_labelled_one() -> None:
    rng = np.random.default_rng(3)
    for _ in range(500):
        h, w = rng.integers(1, 30, 2)
        mask = rng.random((h, w)) < rng.random()
        row, col = int(rng.integers(0, h)), int(rng.integers(0, w))
        comp = component_at(mask, row, col)
        found = _component_box(mask, row, col)
        if comp is None:
            assert found is None
        else:
            assert found == (int(comp.sum()), mask_box(comp))


def test_runtime_option_errors() -> None:
    with pytest.raises(FinecutError, match="unknown runtime 'tensorrt'"):
        finecut.load_model("default:runtime=tensorrt")
    with pytest.raises(FinecutError, match="runtime=onnx is for learned models"):
        finecut.load_model("grabcut:runtime=onnx")
    with pytest.raises(FinecutError, match="onnx_dir goes with runtime=onnx"):
        finecut.load_model("default", onnx_dir="somewhere")
    assert finecut.load_model("grabcut:runtime=torch").name == "grabcut"
    assert finecut.load_model("default:runtime=torch").config()["runtime"] == "torch"


def test_export_command_refuses_a_model_without_networks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from finecut.cli import main

    assert main(["export-onnx", "grabcut", str(tmp_path / "out")]) == 2
    assert "finecut export-onnx: error:" in capsys.readouterr().err


def test_without_onnxruntime_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(FinecutError, match=r"pip install 'finecut\[onnx\]'"):
        finecut.load_model("default:runtime=onnx")


# ------------------------------------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (_have("onnxruntime") and _have("onnx")):
        pytest.skip("onnx / onnxruntime not installed")
    from finecut.cli import main

    out = tmp_path_factory.mktemp("onnx") / "default"
    assert main(["export-onnx", "default", str(out)]) == 0  # the command, as a user runs it
    before = (out / "model.json").read_bytes()
    assert main(["export-onnx", "default", str(out), "--no-verify"]) == 2  # an earlier export is never overwritten
    assert (out / "model.json").read_bytes() == before
    return out


@pytest.fixture(scope="module")
def ntclick_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (_have("onnxruntime") and _have("onnx")):
        pytest.skip("onnx / onnxruntime not installed")
    from finecut.onnx.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "ntclick"
    export_onnx(finecut.load_model("ntclick"), out)
    return out


def _engines(spec: str, directory: Path) -> tuple:
    return finecut.load_model(spec), finecut.load_model(spec, runtime="onnx", onnx_dir=str(directory))


@needs_ort
def test_model_json_describes_the_graphs(default_dir: Path) -> None:
    import onnxruntime as ort

    doc = json.loads((default_dir / "model.json").read_text())
    assert doc["format"] == "finecut-onnx" and doc["format_version"] == 1 and doc["engine"] == "focalclick"
    assert doc["inputs"]["prompt_layout"] == ["previous_mask", "positive", "negative", "tolerant"]
    assert doc["inputs"]["mean"] == pytest.approx([0.485, 0.456, 0.406]) and doc["opset"] == 17
    # the default's pipeline options travel with the graphs (every pass at 288 px)
    assert doc["pipeline"]["target_size"] == 288 and doc["pipeline"]["first_target_size"] == 288
    assert doc["digest"].startswith("sha256:")
    assert set(doc["graphs"]) == {"segmentor", "refiner"}
    for name, graph in doc["graphs"].items():
        assert graph["verified_max_relative_difference"] < 1e-4, name
        session = ort.InferenceSession(str(default_dir / graph["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [t["name"] for t in graph["inputs"]]
        assert [o.name for o in session.get_outputs()] == [t["name"] for t in graph["outputs"]]
        for i in session.get_inputs():  # every spatial axis is dynamic
            assert all(isinstance(d, str) for d in i.shape[2:]), (name, i.name, i.shape)


@needs_ort
def test_graphs_equal_pytorch_on_random_inputs(default_dir: Path) -> None:
    torch_engine, onnx_engine = _engines("default", default_dir)
    gen = torch.Generator().manual_seed(7)
    for h, w in ((256, 112), (64, 256), (176, 240), (16, 256)):
        image, maps = torch.randn(1, 3, h, w, generator=gen), (torch.rand(1, 4, h, w, generator=gen) > 0.8).float()
        with torch.inference_mode():
            want = torch_engine.segmentor(image, maps)
        got = onnx_engine.segmentor(image, maps)
        assert (torch.sigmoid(want["logits"]) - torch.sigmoid(got["logits"])).abs().max() < 1e-5
        assert (want["features"] - got["features"]).abs().max() < 1e-4
    for h, w in ((8, 8), (64, 130), (256, 90)):
        inputs = (torch.randn(1, 3, h, w, generator=gen), torch.rand(1, 4, h, w, generator=gen),
                  torch.randn(1, 1, h, w, generator=gen), torch.randn(1, 64, h // 2, w // 2, generator=gen))
        with torch.inference_mode():
            want = torch_engine.refiner(*inputs)["logits"]
        assert (torch.sigmoid(want) - torch.sigmoid(onnx_engine.refiner(*inputs)["logits"])).abs().max() < 1e-5


def _protocol(engine: finecut.Predictor, sample, clicks: int) -> list:
    pred = np.zeros(sample.gt.shape, bool)
    history, previous, out = [], None, []
    for _ in range(clicks):
        history.append(next_click(sample.gt, pred, history))
        previous = engine.predict(clicks=history, previous=previous)
        pred = previous.mask
        out.append(previous)
    return out


@needs_ort
@needs_data
def test_full_click_protocol_gives_the_same_masks_on_grabcut(default_dir: Path) -> None:
    from finecut.datasets import open_dataset

    dataset = open_dataset("GrabCut", root=DATA)
    torch_engine, onnx_engine = _engines("default", default_dir)
    a, b = finecut.Predictor(torch_engine), finecut.Predictor(onnx_engine)
    assert onnx_engine.config()["runtime"] == "onnx" and torch_engine.config()["runtime"] == "torch"
    worst = 0.0
    for index in (0, 17, 33, 49):
        sample = dataset[index]
        a.set_image(sample.image)
        b.set_image(sample.image)
        assert isinstance(b._features.refiner_input, np.ndarray)  # on ONNX Runtime: not normalised at set_image
        # the simulated user follows the PyTorch masks; ONNX Runtime gets the same clicks, with its own previous answer
        pred, history, x, y = np.zeros(sample.gt.shape, bool), [], None, None
        for _ in range(12):  # 12: Progressive Merge from click 11
            history.append(next_click(sample.gt, pred, history))
            x = a.predict(clicks=history, previous=x)
            y = b.predict(clicks=history, previous=y)
            assert x.state.get("focus_crop") == y.state.get("focus_crop")
            # the same mask, but for a pixel whose probability ties with the threshold to float precision (the new
            # default has one on sample 49: 0.50000006 on PyTorch, 0.49999976 on ONNX Runtime)
            differ = x.mask != y.mask
            assert np.abs(x.probs[differ] - 0.5).max(initial=0.0) < 1e-5 and differ.sum() <= 4
            worst = max(worst, float(np.abs(x.probs - y.probs).max()))
            pred = x.mask
    assert worst < 1e-4


@needs_ort
def test_flip_tta_and_a_box_on_both_runtimes(default_dir: Path) -> None:
    torch_engine = finecut.load_model("default:flip_tta=true")
    onnx_engine = finecut.load_model("default:flip_tta=true", runtime="onnx", onnx_dir=str(default_dir))
    image = np.random.default_rng(2).integers(0, 256, (140, 210, 3), dtype=np.uint8)
    image[30:100, 50:150] = (30, 160, 220)
    a, b = finecut.Predictor(torch_engine), finecut.Predictor(onnx_engine)
    a.set_image(image)
    b.set_image(image)
    x = a.predict(clicks=[finecut.Click(100, 60)], box=(40, 20, 160, 110))
    y = b.predict(clicks=[finecut.Click(100, 60)], box=(40, 20, 160, 110))
    assert np.array_equal(x.mask, y.mask) and np.abs(x.probs - y.probs).max() < 1e-4
    clicks = [finecut.Click(100, 60), finecut.Click(145, 95, "negative")]
    x, y = a.predict(clicks=clicks, previous=x), b.predict(clicks=clicks, previous=y)
    assert np.array_equal(x.mask, y.mask) and np.abs(x.probs - y.probs).max() < 1e-4


@needs_ort
def test_onnx_dir_must_hold_the_same_weights(default_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "stale"
    shutil.copytree(default_dir, other)
    doc = json.loads((other / "model.json").read_text())
    doc["digest"] = "sha256:" + "0" * 64
    (other / "model.json").write_text(json.dumps(doc))
    with pytest.raises(FinecutError, match="exported from other weights"):
        finecut.load_model("default", runtime="onnx", onnx_dir=str(other))
    with pytest.raises(FinecutError, match="no model.json"):
        finecut.load_model("default", runtime="onnx", onnx_dir=str(tmp_path / "nothing"))
    with pytest.raises(FinecutError, match="other weights"):  # focalclick-lite0 is not the default's weights
        finecut.load_model("focalclick-lite0", runtime="onnx", onnx_dir=str(default_dir))


@needs_ort
def test_runtime_onnx_exports_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINECUT_ONNX_CACHE", str(tmp_path / "cache"))
    engine = finecut.load_model("focalclick-lite0:runtime=onnx")
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and Path(engine.onnx_dir) == folders[0]
    stamp = (folders[0] / "segmentor.onnx").stat().st_mtime_ns
    again = finecut.load_model("focalclick-lite0:runtime=onnx")
    assert again.onnx_dir == engine.onnx_dir and (folders[0] / "segmentor.onnx").stat().st_mtime_ns == stamp
    with pytest.raises(FinecutError, match="already runs on onnx|runs on onnx"):
        finecut.onnx.use_onnx(again)


@needs_ort
def test_simpleclick_exports_with_dynamic_sizes(tmp_path: Path) -> None:
    from finecut.models.registry import build_model
    from finecut.onnx.export import export_onnx
    from finecut.registry import build_engine

    config = {"arch": "simpleclick", "variant": "xtiny", "img_size": 224, "depth": 2}
    torch.manual_seed(0)
    net = build_model(dict(config))
    doc = {"engine": "simpleclick", "model": config}
    engine = build_engine(net, doc)
    export_onnx(engine, tmp_path / "sc")  # verified at three sizes
    onnx_engine = finecut.onnx.use_onnx(build_engine(copy.deepcopy(net), doc), tmp_path / "sc")
    image = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    a, b = finecut.Predictor(engine), finecut.Predictor(onnx_engine)
    a.set_image(image)
    b.set_image(image)
    clicks = [finecut.Click(100, 60), finecut.Click(20, 20, "negative")]
    x, y = a.predict(clicks=clicks), b.predict(clicks=clicks)
    assert np.abs(x.probs - y.probs).max() < 1e-4
    # the shipped model's settings: flip TTA and the first click's zoomed-in second pass, on either runtime
    shipped = {"zoom_first_pass": True, "flip_tta": True, "first_target_size": 224, "target_size": 320,
               "square_input": True}
    a = finecut.Predictor(build_engine(copy.deepcopy(net), doc, **shipped))
    b = finecut.Predictor(build_engine(copy.deepcopy(net), doc, runtime="onnx", onnx_dir=tmp_path / "sc", **shipped))
    a.set_image(image)
    b.set_image(image)
    x, y = a.predict(clicks=clicks[:1]), b.predict(clicks=clicks[:1])
    assert "first_pass_crop" in x.state and "first_pass_crop" in y.state
    assert np.abs(x.probs - y.probs).max() < 1e-4


@needs_ort
def test_ntclick_graphs_and_pipeline_equal_pytorch(ntclick_dir: Path) -> None:
    from finecut.onnx.runtime import OnnxHRR

    torch_engine, onnx_engine = _engines("ntclick", ntclick_dir)
    gen = torch.Generator().manual_seed(5)
    image, maps = torch.randn(1, 3, 96, 224, generator=gen), (torch.rand(1, 4, 96, 224, generator=gen) > 0.8).float()
    with torch.inference_mode():
        want = torch_engine.ecp(image, maps)["logits"]
    assert (want - onnx_engine.ecp(image, maps)["logits"]).abs().max() < 1e-3
    # the HRR on a region that needs padding, in one piece and in stripes of 40 rows (halo 6)
    region = torch.randn(1, 3, 200, 150, generator=gen)
    labels = torch.randint(0, 3, (200, 150), generator=gen)
    fbu = (labels[None, None] == torch.arange(3)[None, :, None, None]).float()
    with torch.inference_mode():
        want = torch.sigmoid(torch_engine.hrr(region, fbu)["logits"])
    hrr = onnx_engine.hrr
    striped = OnnxHRR(hrr.body, hrr.final, dataclasses.replace(hrr.config, stripe_rows=40))
    for runner in (hrr, striped):
        assert (want - torch.sigmoid(runner(region, fbu)["logits"])).abs().max() < 1e-4
    # the whole pipeline, click by click
    image = np.random.default_rng(1).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    image[40:110, 60:170] = (200, 60, 40)
    a, b = finecut.Predictor(torch_engine), finecut.Predictor(onnx_engine)
    a.set_image(image)
    b.set_image(image)
    clicks, pa, pb = [], None, None
    for click in (finecut.Click(110, 75), finecut.Click(30, 30, "negative"), finecut.Click(165, 105, "tolerant")):
        clicks.append(click)
        pa, pb = a.predict(clicks=clicks, previous=pa), b.predict(clicks=clicks, previous=pb)
        assert np.array_equal(pa.mask, pb.mask) and np.abs(pa.probs - pb.probs).max() < 1e-4


@needs_ort
@needs_data
def test_docs_example_segments_without_torch(default_dir: Path, tmp_path: Path) -> None:
    from finecut.datasets import open_dataset

    code = re.search(r"## Example.*?```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert code is not None, "docs/onnx.md has no example"
    script = tmp_path / "segment_onnx.py"
    script.write_text(code.group(1))
    sample = open_dataset("GrabCut", root=DATA)[0]
    np.save(tmp_path / "image.npy", sample.image)
    predictor = finecut.Predictor(finecut.load_model("default", runtime="onnx", onnx_dir=str(default_dir)),
                                  honour_clicks=False)
    predictor.set_image(sample.image)
    steps = _protocol(predictor, sample, 4)  # the clicks finecut's own loop asked for
    arguments = [f"{c.x},{c.y}" + ("" if c.is_positive else ":neg") for c in steps[-1].clicks]
    # -I: no PYTHONPATH, no user site, no script folder on the path: numpy and onnxruntime from the venv; the script
    # itself asserts that torch was never imported
    run = subprocess.run([sys.executable, "-I", str(script), str(default_dir), "image.npy", *arguments],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    mask = np.load(tmp_path / "mask.npy")
    gt, finecut_mask = sample.gt == 1, steps[-1].mask
    valid = sample.gt >= 0
    iou = (mask & gt)[valid].sum() / (mask | gt)[valid].sum()
    agreement = (mask & finecut_mask).sum() / (mask | finecut_mask).sum()
    assert iou > 0.85 and agreement > 0.95, (iou, agreement)


@needs_ort
def test_an_hrr_with_a_click_input_exports_with_its_click_maps(tmp_path: Path) -> None:
    """An NTClick HRR with a click input (click_channels=3) exports hrr_body with a third input, ``clicks``; the
    runtime feeds it (zeros when given none) and matches the PyTorch HRR, and the pipeline matches click by click."""
    from finecut.models.checkpoint import save_checkpoint
    from finecut.models.ntclick import build_ntclick
    from finecut.onnx.export import export_onnx
    from helpers_training import TINY_ECP, TINY_HRR

    torch.manual_seed(0)
    net = build_ntclick(ecp=TINY_ECP, hrr={**TINY_HRR, "click_channels": 3}).eval()
    torch.nn.init.normal_(net.hrr.click_embed.weight, std=0.5)
    torch.nn.init.normal_(net.hrr.head[-1].weight, std=1.0)
    path, _ = save_checkpoint(tmp_path / "tiny-nt", net, net.arch_config(), {"engine": "ntclick", "name": "tiny-nt"})
    export_onnx(finecut.load_model(str(path), hrr_scope="all"), tmp_path / "onnx")
    doc = json.loads((tmp_path / "onnx" / "model.json").read_text())
    import onnx

    body = onnx.load(str(tmp_path / "onnx" / doc["graphs"]["hrr_body"]["file"]))
    assert [i.name for i in body.graph.input] == ["image", "fbu", "clicks"]
    torch_engine, onnx_engine = _engines(f"{path}:hrr_scope=all", tmp_path / "onnx")
    gen = torch.Generator().manual_seed(3)
    region = torch.randn(1, 3, 200, 150, generator=gen)
    labels = torch.randint(0, 3, (200, 150), generator=gen)
    fbu = (labels[None, None] == torch.arange(3)[None, :, None, None]).float()
    clicks = torch.zeros(1, 3, 200, 150)
    clicks[0, 2, 90:100, 60:70] = 1.0
    with torch.inference_mode():
        for maps in (clicks, None):
            want = torch.sigmoid(torch_engine.hrr(region, fbu, clicks=maps)["logits"])
            assert (want - torch.sigmoid(onnx_engine.hrr(region, fbu, clicks=maps)["logits"])).abs().max() < 1e-4
    image = np.random.default_rng(1).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    a, b = finecut.Predictor(torch_engine), finecut.Predictor(onnx_engine)
    a.set_image(image)
    b.set_image(image)
    steps, pa, pb = [], None, None
    for click in (finecut.Click(110, 75, "tolerant"), finecut.Click(165, 105, "tolerant")):
        steps.append(click)
        pa, pb = a.predict(clicks=steps, previous=pa), b.predict(clicks=steps, previous=pb)
        assert np.abs(pa.probs - pb.probs).max() < 1e-3
