"""Property-based (fuzz) tests: whatever the input, finecut answers with a clear :class:`FinecutError` (a one-line
message) or a 4xx, never a traceback, a 500 or unbounded memory.

Covered: image decoding (random bytes, truncated and corrupted files, every Pillow mode, huge headers), mask and
label readers, checkpoint loading (corrupted JSON and safetensors, wrong shapes, hostile configs), prompt validation
(API and CLI), and the JSON of every HTTP endpoint of ``finecut app`` and ``finecut serve`` (random types, NaN,
huge numbers, deep nesting). Examples are bounded by the ``ci`` Hypothesis profile (tests/conftest.py); run
``python -m pytest tests/test_fuzz.py --hypothesis-profile long`` to explore more.
"""

from __future__ import annotations

import base64
import io
import json
import math
import resource
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from doubles import DiskEngine
from helpers_app import photo_like
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from finecut import io as fio
from finecut.app import AppConfig, create_app
from finecut.datasets.labels import read_index_label, read_label
from finecut.errors import FinecutError, TooLarge
from finecut.prompts import Box, Click, ClickKind, Prompts, Scribble
from finecut.server import ServeConfig, create_server

#: Small enough that anything the fuzzers get decoded stays small in memory.
FUZZ_PIXELS = 1_000_000
#: Per-test settings on top of the profile: the examples create files and servers.
FILES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# ------------------------------------------------------------------ images: encoders, modes, corruption
MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa", "La",
         "I;16", "I;16B", "I;16L"]
FORMATS = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM"]


def encode_pil(mode: str, fmt: str, width: int, height: int, seed: int = 0) -> bytes | None:
    """A small image in ``mode`` saved as ``fmt``, or None when Pillow cannot write that combination."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    try:
        im = rgb.convert(mode)
    except (ValueError, OSError):
        im = Image.new(mode, (width, height))
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return buf.getvalue()


def check_decoded(out: np.ndarray) -> None:
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert 0 < out.shape[0] * out.shape[1] <= FUZZ_PIXELS


def decode_or_error(data: bytes, what: str = "fuzz.img") -> None:
    try:
        out = fio.decode_image(data, what, max_pixels=FUZZ_PIXELS)
    except FinecutError as exc:
        assert what in one_line(exc)
    else:
        check_decoded(out)


@pytest.mark.parametrize("mode", MODES)
def test_every_pillow_mode_decodes_or_gives_a_clear_error(mode: str) -> None:
    written = 0
    for fmt in FORMATS:
        data = encode_pil(mode, fmt, 23, 17)
        if data is None:
            continue
        written += 1
        try:
            out = fio.decode_image(data, f"{mode}.{fmt}", max_pixels=FUZZ_PIXELS)
        except FinecutError as exc:
            assert f"{mode}.{fmt}" in one_line(exc)
        else:
            assert out.shape == (17, 23, 3) and out.dtype == np.uint8, (mode, fmt)
    if not written:
        pytest.skip(f"Pillow writes {mode} in none of {FORMATS}")


@given(st.binary(max_size=4096))
def test_random_bytes_are_an_image_or_a_clear_error(data: bytes) -> None:
    decode_or_error(data)


@given(st.sampled_from(FORMATS), st.sampled_from(["RGB", "L", "P", "RGBA", "I;16", "1"]),
       st.integers(1, 64), st.integers(1, 64), st.data())
def test_truncated_and_corrupted_files_are_an_image_or_a_clear_error(fmt: str, mode: str, w: int, h: int,
                                                                    data: st.DataObject) -> None:
    encoded = encode_pil(mode, fmt, w, h)
    assume(encoded is not None)
    assert encoded is not None
    cut = data.draw(st.integers(0, len(encoded)), label="cut")
    decode_or_error(encoded[:cut])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(encoded) - 1), st.integers(0, 255)), max_size=8))
    corrupted = bytearray(encoded)
    for pos, value in flips:
        corrupted[pos] = value
    decode_or_error(bytes(corrupted))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def huge_header(fmt: str, width: int, height: int) -> bytes:
    """A tiny file whose header declares ``width`` x ``height`` (its pixel data is missing or tiny)."""
    if fmt == "PNG":
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
            _chunk(b"IEND", b"")
    if fmt == "BMP":
        header = struct.pack("<2sIHHI", b"BM", 54 + 16, 0, 0, 54)
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 16, 2835, 2835, 0, 0)
        return header + info + b"\0" * 16
    if fmt == "PPM":
        return f"P6\n{width} {height}\n255\n".encode() + b"\0" * 64
    if fmt == "GIF":
        w16, h16 = min(width, 65535), min(height, 65535)
        screen = struct.pack("<HHBBB", w16, h16, 0, 0, 0)
        return b"GIF89a" + screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, w16, h16, 0) + b"\x02\x02\x44\x01\x00\x3b"
    if fmt == "JPEG":
        base = encode_pil("RGB", "JPEG", 8, 8)
        assert base is not None
        sof = base.index(b"\xff\xc0")
        return base[: sof + 5] + struct.pack(">HH", min(height, 65535), min(width, 65535)) + base[sof + 9 :]
    raise AssertionError(fmt)


@given(st.sampled_from(["PNG", "BMP", "PPM", "GIF", "JPEG"]), st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_huge_headers_are_refused_before_decoding(fmt: str, width: int, height: int) -> None:
    data = huge_header(fmt, width, height)
    before, start = maxrss_mb(), time.perf_counter()
    try:
        out = fio.decode_image(data, f"huge.{fmt}", max_pixels=FUZZ_PIXELS)
    except TooLarge as exc:
        assert "limit" in one_line(exc)
    except FinecutError as exc:
        one_line(exc)
    else:
        check_decoded(out)
    assert time.perf_counter() - start < 2.0
    assert maxrss_mb() - before < 100


# ------------------------------------------------------------------ mask and label readers
@given(st.sampled_from([".png", ".gif", ".bmp", ".jpg", ".tif"]), st.sampled_from(["L", "P", "1", "RGB", "I;16"]),
       st.data())
@FILES
def test_mask_and_label_readers_on_corrupted_files(tmp_path: Path, suffix: str, mode: str,
                                                   data: st.DataObject) -> None:
    fmt = {".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".jpg": "JPEG", ".tif": "TIFF"}[suffix]
    encoded = encode_pil(mode, fmt, 19, 13, seed=3)
    assume(encoded is not None)
    assert encoded is not None
    cut = data.draw(st.integers(0, len(encoded)))
    noise = data.draw(st.binary(max_size=64))
    path = tmp_path / f"label{suffix}"
    path.write_bytes(encoded[:cut] + noise)
    for reader in (fio.read_mask, fio.read_label_image, read_label, read_index_label):
        try:
            out = reader(path)
        except FinecutError as exc:
            assert "label" in one_line(exc), reader
        else:
            assert isinstance(out, np.ndarray) and out.ndim in (2, 3) and out.size <= FUZZ_PIXELS * 4


# ------------------------------------------------------------------ checkpoint loading
TINY_MODEL = {"arch": "focalclick", "head_channels": 16, "refiner_channels": 8}


class Checkpoint:
    """A tiny real checkpoint (its config and weight bytes), kept out of Hypothesis' failure reports."""

    def __init__(self, doc: dict[str, Any], weights: bytes) -> None:
        self.doc, self.weights = doc, weights

    def __repr__(self) -> str:
        return "Checkpoint(tiny focalclick)"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    from finecut.models.checkpoint import save_checkpoint
    from finecut.models.registry import build_model

    root = tmp_path_factory.mktemp("ckpt")
    json_path, weights = save_checkpoint(root / "tiny", build_model(TINY_MODEL), TINY_MODEL, {"engine": "focalclick"})
    return Checkpoint(json.loads(json_path.read_text()), weights.read_bytes())


def load_or_error(root: Path, doc_text: str | bytes, weights: bytes) -> None:
    from finecut.registry import load_model

    json_path = root / "fuzz.json"
    json_path.write_bytes(doc_text if isinstance(doc_text, bytes) else doc_text.encode())
    (root / "fuzz.safetensors").write_bytes(weights)
    before = maxrss_mb()
    try:
        load_model(str(json_path))
    except FinecutError as exc:
        assert "fuzz" in one_line(exc)
    assert maxrss_mb() - before < 500


FLOATS = st.floats(allow_nan=True, allow_subnormal=False)  # some loaded library sets flush-to-zero
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | FLOATS | st.text(max_size=12)


@given(st.sampled_from(["head_channels", "refiner_channels", "backbone", "head", "prompt_channels", "target_size",
                        "arch", "extra"]), JSON_SCALARS)
@FILES
def test_checkpoint_configs_with_bad_values(tmp_path: Path, tiny_checkpoint: Checkpoint, key: str,
                                            value: Any) -> None:
    doc, weights = tiny_checkpoint.doc, tiny_checkpoint.weights
    bad = json.loads(json.dumps(doc))
    bad["model"][key] = value
    load_or_error(tmp_path, json.dumps(bad), weights)


@given(st.data())
@FILES
def test_corrupted_checkpoint_json_and_weights(tmp_path: Path, tiny_checkpoint: Checkpoint,
                                               data: st.DataObject) -> None:
    doc, weights = tiny_checkpoint.doc, tiny_checkpoint.weights
    text = json.dumps(doc).encode()
    which = data.draw(st.sampled_from(["json-cut", "json-flip", "weights-cut", "weights-flip", "doc-shape"]))
    if which == "json-cut":
        text = text[: data.draw(st.integers(0, len(text)))]
    elif which == "json-flip":
        pos = data.draw(st.integers(0, len(text) - 1))
        text = text[:pos] + bytes([data.draw(st.integers(0, 255))]) + text[pos + 1 :]
    elif which == "weights-cut":
        weights = weights[: data.draw(st.integers(0, len(weights)))]
    elif which == "weights-flip":  # the header (length + JSON) is where corruption matters
        pos = data.draw(st.integers(0, min(len(weights) - 1, 4096)))
        weights = weights[:pos] + bytes([data.draw(st.integers(0, 255))]) + weights[pos + 1 :]
    else:  # wrong shapes: another head width than the weights were trained with
        shaped = json.loads(json.dumps(doc))
        shaped["model"]["head_channels"] = data.draw(st.sampled_from([8, 32, 2**20, 2**40]))
        text = json.dumps(shaped).encode()
    load_or_error(tmp_path, text, weights)


def test_deeply_nested_checkpoint_json(tmp_path: Path, tiny_checkpoint: Checkpoint) -> None:
    load_or_error(tmp_path, "[" * 100_000 + "]" * 100_000, tiny_checkpoint.weights)
    load_or_error(tmp_path, '{"model": {"arch": "focalclick", "head_channels": 1' + "0" * 5000 + "}}",
                  tiny_checkpoint.weights)


# ------------------------------------------------------------------ prompt validation (API and CLI)
NUMBERS = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False) | st.integers(-(2**80), 2**80)


@given(NUMBERS, NUMBERS, st.text(max_size=10), st.integers(-5, 3000), st.integers(-5, 3000))
def test_clicks_are_valid_or_a_clear_error(x: Any, y: Any, kind: str, h: int, w: int) -> None:
    try:
        click = Click(x, y, ClickKind.parse(kind) if kind else ClickKind.POSITIVE)
        Prompts(clicks=(click,)).validate(h, w)
    except FinecutError as exc:
        one_line(exc)
    else:
        assert math.isfinite(click.x) and math.isfinite(click.y)
        assert 0 <= click.x < w and 0 <= click.y < h


@given(st.lists(NUMBERS, min_size=4, max_size=4), st.lists(st.tuples(NUMBERS, NUMBERS), max_size=5), NUMBERS,
       st.integers(1, 500), st.integers(1, 500))
def test_boxes_and_scribbles_are_valid_or_a_clear_error(box: list[Any], points: list[Any], width: Any,
                                                       h: int, w: int) -> None:
    for build in (lambda: Box(*box), lambda: Scribble(tuple(points), True, width)):
        try:
            prompt = build()
            if isinstance(prompt, Box):
                Prompts(box=prompt).validate(h, w)
            else:
                Prompts(scribbles=(prompt,)).validate(h, w)
        except FinecutError as exc:
            one_line(exc)


@given(st.text(max_size=40))
def test_cli_click_and_box_text_is_valid_or_a_clear_error(text: str) -> None:
    from finecut.commands.segment import parse_box, parse_click

    for parse in (parse_click, parse_box):
        try:
            parse(text)
        except FinecutError as exc:
            one_line(exc)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | FLOATS | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(JSON)
def test_cli_batch_prompt_entries_are_valid_or_a_clear_error(entry: Any) -> None:
    from finecut.commands.segment import parse_prompt_entry

    try:
        parse_prompt_entry(entry, "p.json ['x.png']")
    except FinecutError as exc:
        assert "x.png" in one_line(exc)


# ------------------------------------------------------------------ HTTP endpoints' JSON
def strict_json(text: str) -> Any:
    """Parse a response body as standard JSON (NaN / Infinity are not JSON)."""
    def refuse(token: str) -> Any:
        raise AssertionError(f"response body is not standard JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def send(client: TestClient, method: str, url: str, body: Any) -> None:
    text = json.dumps(body, allow_nan=True)  # NaN / Infinity literals, as a hostile client sends them
    r = client.request(method, url, content=text.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (method, url, text[:200], r.status_code, r.text[:300])
    parsed = strict_json(r.text) if r.headers.get("content-type", "").startswith("application/json") else None
    if r.status_code >= 400:
        assert isinstance(parsed, dict) and isinstance(parsed.get("detail"), str), r.text[:300]


H, W = 48, 64
IMAGE_B64 = base64.b64encode(cv2.imencode(".png", photo_like(H, W))[1].tobytes()).decode()


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("fuzzapp")
    cv2.imwrite(str(folder / "a.png"), photo_like(H, W))
    engine = DiskEngine(radius=6)
    config = AppConfig(image_dir=folder, default_model="disk", models=["disk"], model_factory=lambda n: engine)
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def serve_client() -> Iterator[TestClient]:
    engine = DiskEngine(radius=6)
    config = ServeConfig(model="disk", models=["disk"], model_factory=lambda n: engine)
    with TestClient(create_server(config), raise_server_exceptions=False) as client:
        yield client


APP_ENDPOINTS = [
    ("POST", "/api/images/a.png/open", {"model": "disk"}),
    ("POST", "/api/images/a.png/click", {"x": 10, "y": 12, "kind": "positive"}),
    ("POST", "/api/images/a.png/box", {"box": [2, 3, 30, 40]}),
    ("POST", "/api/images/a.png/scribble", {"points": [[1, 2], [5, 6]], "positive": True, "width": 3}),
    ("POST", "/api/images/a.png/threshold", {"threshold": 0.4}),
    ("POST", "/api/images/a.png/model", {"model": "disk"}),
    ("POST", "/api/images/a.png/finish", {"label": "cat"}),
    ("POST", "/api/images/a.png/undo", {}),
    ("PATCH", "/api/images/a.png/objects/1", {"label": "dog"}),
    ("POST", "/api/export", {"formats": ["png"]}),
]

SERVE_ENDPOINTS = [
    ("POST", "/cvat", {"image": IMAGE_B64, "pos_points": [[10, 12]], "neg_points": [], "obj_bbox": None,
                       "threshold": 0.5}),
    ("POST", "/api/function_invocations", {"image": IMAGE_B64, "pos_points": [[10, 12]], "neg_points": []}),
    ("POST", "/setup", {"project": "1", "schema": "<View><Image name='image' value='$image'/>"
                        "<BrushLabels name='tag' toName='image'><Label value='Cat'/></BrushLabels></View>"}),
    ("POST", "/predict", {"tasks": [{"data": {"image": "data:image/png;base64," + IMAGE_B64}}], "project": "1",
                          "params": {"context": {"result": [{"type": "keypointlabels", "original_width": W,
                                                             "original_height": H, "is_positive": True,
                                                             "value": {"x": 20.0, "y": 30.0}}]}}}),
]


def mutate(template: Any, data: st.DataObject) -> Any:
    """The template with one value somewhere inside it replaced by random JSON (or the whole body replaced)."""
    paths: list[tuple[Any, ...]] = [()]

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, child in items:
            paths.append(path + (key,))
            walk(child, path + (key,))

    walk(template, ())
    path = data.draw(st.sampled_from(paths), label="path")
    value = data.draw(JSON, label="value")
    if not path:
        return value
    body = json.loads(json.dumps(template))
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


@pytest.mark.parametrize(("method", "url", "template"), APP_ENDPOINTS, ids=[e[1] for e in APP_ENDPOINTS])
@given(data=st.data())
@FILES
def test_app_endpoints_answer_json_4xx_to_any_json(app_client: TestClient, method: str, url: str, template: Any,
                                                   data: st.DataObject) -> None:
    send(app_client, method, url, mutate(template, data))


@pytest.mark.parametrize(("method", "url", "template"), SERVE_ENDPOINTS, ids=[e[1] for e in SERVE_ENDPOINTS])
@given(data=st.data())
@FILES
def test_serve_endpoints_answer_json_4xx_to_any_json(serve_client: TestClient, method: str, url: str,
                                                     template: Any, data: st.DataObject) -> None:
    headers_url = url
    if url == "/api/function_invocations":
        body = mutate(template, data)
        r = serve_client.post(headers_url, content=json.dumps(body, allow_nan=True).encode(),
                              headers={"Content-Type": "application/json", "x-nuclio-function-name": "finecut-disk"})
        assert r.status_code < 500, r.text[:300]
        strict_json(r.text)
        return
    send(serve_client, method, url, mutate(template, data))


@pytest.mark.parametrize("depth", [100, 2_000, 200_000])
def test_deeply_nested_json_is_a_4xx(app_client: TestClient, serve_client: TestClient, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    for client, url in [(app_client, "/api/images/a.png/click"), (serve_client, "/cvat"), (serve_client, "/predict")]:
        r = client.post(url, content=nested.encode(), headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (url, depth, r.status_code)
        assert isinstance(strict_json(r.text)["detail"], str)
    deep_object = '{"x": ' * depth + "1" + "}" * depth
    r = app_client.post("/api/images/a.png/click", content=deep_object.encode(),
                        headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500
