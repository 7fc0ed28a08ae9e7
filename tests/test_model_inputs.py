"""finecut.model_inputs: named prompt layouts, the checkpoint's "inputs" field, and the one prompt-map encoder shared
by inference and training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finecut import Click, FinecutError
from finecut.model_inputs import (
    PROMPT_CHANNELS, InputSpec, batch_prompt_maps, crop_prompt_maps, input_spec, leading_layout, normalize,
    normalize_batch, trailing_layout,
)
from finecut.models.checkpoint import load_checkpoint, save_checkpoint
from finecut.models.registry import build_model
from finecut.prompts import CropTransform, Prompts, click_disks

TINY_ECP = {"img_size": 64, "embed_dim": 32, "depth": 1, "num_heads": 2, "pyramid_channels": [8, 8, 16, 16],
            "head_channels": 16}
TINY_HRR = {"embed_dim": 32, "depth": 1, "num_heads": 2, "kernel_size": 5, "low_channels": [4, 4, 8, 8],
            "fuse_channels": [16, 8, 8, 4]}


def test_layouts_follow_the_architecture() -> None:
    assert leading_layout(3) == ("previous_mask", "positive", "negative")
    assert trailing_layout(3) == ("positive", "negative", "tolerant")
    assert leading_layout(4) == trailing_layout(4) == PROMPT_CHANNELS
    with torch.device("meta"):
        simpleclick = build_model({"arch": "simpleclick", "variant": "xtiny", "depth": 2, "prompt_channels": 3})
        ecp3 = build_model({"arch": "ntclick", "ecp": {**TINY_ECP, "prompt_channels": 3}, "hrr": TINY_HRR})
        focal = build_model({"arch": "focalclick", "prompt_channels": 4})
    assert input_spec(simpleclick).prompt_layout == ("previous_mask", "positive", "negative")
    assert input_spec(ecp3).prompt_layout == ("positive", "negative", "tolerant")  # same count, other channels
    assert input_spec(focal).prompt_layout == PROMPT_CHANNELS
    assert input_spec(torch.nn.Identity()).prompt_layout == PROMPT_CHANNELS  # a network that declares nothing


def test_stored_inputs_win_and_must_fit_the_network() -> None:
    with torch.device("meta"):
        net = build_model({"arch": "focalclick", "prompt_channels": 3})
    stored = {"inputs": {"prompt_layout": ["positive", "negative", "tolerant"]}}
    assert input_spec(net, stored).prompt_layout == ("positive", "negative", "tolerant")
    with pytest.raises(FinecutError, match="network takes 3"):
        input_spec(net, {"inputs": {"prompt_layout": list(PROMPT_CHANNELS)}})
    for bad in ({"prompt_layout": ["positive", "positive"]}, {"prompt_layout": ["box"]}, {"prompt_layout": "pos"},
                {"prompt_layout": ["positive"], "mean": [1, 2]}, {"prompt_layout": ["positive"], "colour": 1}, []):
        with pytest.raises(FinecutError):
            InputSpec.from_json(bad)
    spec = InputSpec(trailing_layout(3))
    assert InputSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_checkpoints_record_their_inputs_and_older_ones_derive_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model({"arch": "ntclick", "ecp": {**TINY_ECP, "prompt_channels": 3}, "hrr": TINY_HRR})
    json_path, _ = save_checkpoint(tmp_path / "m", net, net.arch_config())
    doc = json.loads(json_path.read_text())
    assert doc["inputs"]["prompt_layout"] == ["positive", "negative", "tolerant"]
    del doc["inputs"]  # a checkpoint written before the field existed
    json_path.write_text(json.dumps(doc))
    model, loaded = load_checkpoint(json_path)
    assert "inputs" not in loaded and input_spec(model, loaded).prompt_layout == ("positive", "negative", "tolerant")


def test_inference_and_training_encode_the_same_maps() -> None:
    clicks = [Click(10, 12), Click(30, 5, "negative"), Click(20, 40, "tolerant")]
    previous = np.zeros((48, 64), np.float32)
    previous[10:30, 5:25] = 1
    for layout in (PROMPT_CHANNELS, leading_layout(3), trailing_layout(3), ("tolerant", "previous_mask")):
        crop = crop_prompt_maps(Prompts(clicks=tuple(clicks)), tuple(clicks), previous, (0, 0, 64, 48), (48, 64),
                                5.0, layout)
        batch = batch_prompt_maps([clicks], torch.from_numpy(previous)[None, None], 5.0, layout,
                                  torch.contiguous_format)
        assert crop.shape == (1, len(layout), 48, 64) and torch.equal(crop, batch)
    disks = click_disks(clicks, CropTransform.identity(48, 64))
    maps = crop_prompt_maps(Prompts(clicks=tuple(clicks)), tuple(clicks), previous, (0, 0, 64, 48), (48, 64), 5.0,
                            trailing_layout(3))
    assert np.array_equal(maps[0].numpy(), disks)  # [positive, negative, tolerant] is the disk stack itself
    assert torch.equal(batch_prompt_maps([clicks], torch.zeros(1, 1, 48, 64), 5.0, 2),
                       batch_prompt_maps([clicks], torch.zeros(1, 1, 48, 64), 5.0, leading_layout(2)))


def test_the_two_normalisations_agree_to_rounding() -> None:
    image = np.random.default_rng(0).integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    inference = torch.cat([normalize(im) for im in image])
    training = normalize_batch(image)
    assert training.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(inference, training, atol=1e-5)


def test_batch_click_disks_draw_the_pixels_of_click_disks() -> None:
    """The training path's one-scatter disks (on any device) equal the per-sample NumPy ones of the shared geometry,
    for fractional clicks, clicks off the map, every kind, and radii from 0 to 7.3."""
    from finecut.model_inputs import batch_click_disks
    from finecut.prompts import ClickKind, CropTransform, click_disks

    rng = np.random.default_rng(0)
    kinds = list(ClickKind)
    for _ in range(100):
        b, h, w = int(rng.integers(1, 4)), int(rng.integers(5, 50)), int(rng.integers(5, 50))
        radius = float(rng.choice([0.0, 1.0, 2.5, 5.0, 7.3]))
        clicks = [[Click(float(rng.uniform(-8, w + 8)), float(rng.uniform(-8, h + 8)),
                         kinds[int(rng.integers(len(kinds)))]) for _ in range(int(rng.integers(0, 6)))]
                  for _ in range(b)]
        expected = np.stack([click_disks(c, CropTransform.identity(h, w), radius) for c in clicks])
        assert np.array_equal(batch_click_disks(clicks, b, h, w, radius).numpy(), expected)
    with pytest.raises(ValueError, match="click lists"):
        batch_click_disks([[]], 2, 8, 8, 5.0)
