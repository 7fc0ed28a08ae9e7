"""The one image loader (``finecut.io``): EXIF orientation, the pixel limit checked on the header before decoding,
one-line errors naming the file, and unchanged pixels for files without orientation."""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from finecut import io as fio
from finecut.errors import FinecutError, NotAnImage, TooLarge

ORIENTATION = 0x0112


def _photo(h: int = 30, w: int = 45, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    img[:5, :8] = (255, 0, 0)  # a marker in the stored top-left corner
    return img


def _with_orientation(image: np.ndarray, orientation: int, fmt: str = "PNG", **kw) -> bytes:
    im = Image.fromarray(image)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buf = io.BytesIO()
    im.save(buf, format=fmt, exif=exif.tobytes(), **kw)
    return buf.getvalue()


def png_bomb(width: int, height: int, full: bool = True) -> bytes:
    """A small 8-bit greyscale PNG declaring ``width`` x ``height``: with ``full``, real zero rows compressed (it
    decodes to width * height bytes), else one short data chunk (only the header is big)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height if full else 1)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_like_pillow(tmp_path: Path, orientation: int, fmt: str) -> None:
    stored = _photo()
    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    path.write_bytes(_with_orientation(stored, orientation, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    with Image.open(path) as im:
        expected = np.array(ImageOps.exif_transpose(im).convert("RGB"))
    got = fio.read_image(path)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert np.array_equal(fio.decode_image(path.read_bytes(), "upload"), expected)


def test_jpeg_with_orientation_6_comes_back_in_displayed_orientation(tmp_path: Path) -> None:
    # the case: stored 451x300 with orientation 6, shown by browsers as 300x451
    path = tmp_path / "phone.jpg"
    path.write_bytes(_with_orientation(_photo(300, 451), 6, fmt="JPEG", quality=95))
    image = fio.read_image(path)
    assert image.shape == (451, 300, 3)
    assert image[:5, -8:].mean(axis=(0, 1))[0] > 200  # the stored top-left marker is now top-right
    header = fio.image_header(path)
    assert (header.width, header.height, header.orientation) == (300, 451, 6)


def test_label_and_mask_readers_apply_orientation_too(tmp_path: Path) -> None:
    mask = np.zeros((20, 40), np.uint8)
    mask[:5, :10] = 255
    path = tmp_path / "m.png"
    exif = Image.Exif()
    exif[ORIENTATION] = 8
    Image.fromarray(mask).save(path, exif=exif.tobytes())
    got = fio.read_mask(path)
    assert got.shape == (40, 20)
    assert np.array_equal(got, np.rot90(mask > 0, 1))
    assert fio.read_label_image(path).shape == (40, 20)


def test_files_without_orientation_keep_their_pixels(tmp_path: Path) -> None:
    img = _photo(37, 53)
    for suffix in (".png", ".jpg", ".bmp", ".tif", ".webp"):
        path = tmp_path / f"x{suffix}"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        data = np.fromfile(str(path), np.uint8)
        expected = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
        assert np.array_equal(fio.read_image(path), expected), suffix


def test_sixteen_bit_and_gray_and_alpha_images(tmp_path: Path) -> None:
    g16 = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    out = fio.read_image(tmp_path / "g16.png")
    assert out.shape == (30, 40, 3) and np.array_equal(out[..., 0], (g16 / 257.0).round().astype(np.uint8))
    assert fio.read_label_image(tmp_path / "g16.png").dtype == np.uint16
    rgba = np.dstack([_photo(10, 12), np.full((10, 12), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(fio.read_image(tmp_path / "a.png"), rgba[..., :3])


def test_pixel_limit_is_checked_on_the_header_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(8000, 8000))  # 64 MP of zeros in ~70 KB, over the default 40 MP limit
    assert bomb.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(TooLarge) as info:
        fio.read_image(bomb)
    with pytest.raises(TooLarge):
        fio.read_label_image(bomb)
    with pytest.raises(TooLarge):
        fio.decode_image(bomb.read_bytes(), "upload.png")
    assert time.perf_counter() - start < 1.0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, f"memory grew by {grown_mb:.0f} MB: the image was decoded"
    message = str(info.value)
    assert str(bomb) in message and "8000x8000" in message and "limit" in message
    assert "\n" not in message
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bomb(20000, 20000, full=False))
    with pytest.raises(TooLarge, match="over the limit of 40.0 MP"):
        fio.read_image(huge)


def test_pixel_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), _photo(100, 100))
    assert fio.read_image(path, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(TooLarge, match="over the limit"):
        fio.read_image(path, max_pixels=9_999)
    monkeypatch.setenv(fio.MAX_MEGAPIXELS_ENV, "0.005")
    assert fio.pixel_limit() == 5_000
    with pytest.raises(TooLarge):
        fio.read_image(path)
    monkeypatch.setenv(fio.MAX_MEGAPIXELS_ENV, "lots")
    with pytest.raises(FinecutError, match=fio.MAX_MEGAPIXELS_ENV):
        fio.pixel_limit()
    monkeypatch.delenv(fio.MAX_MEGAPIXELS_ENV)
    assert fio.pixel_limit() == int(fio.DEFAULT_MAX_MEGAPIXELS * 1e6)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0" + b"\0" * 40])
def test_undecodable_data_gives_a_one_line_error_naming_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(data)
    with pytest.raises(NotAnImage) as info:
        fio.read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(NotAnImage):
        fio.decode_image(data, "upload.jpg")


def test_truncated_file_is_an_error_or_an_image(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".png", _photo(64, 64))
    data = buf.tobytes()
    for cut in (10, 40, len(data) // 2, len(data) - 5):
        try:
            out = fio.decode_image(data[:cut], "cut.png")
        except FinecutError as exc:
            assert "cut.png" in str(exc)
        else:
            assert out.shape == (64, 64, 3)


def test_benchmark_readers_keep_identical_pixels() -> None:
    """Benchmark images have no EXIF rotation: the loader must give what plain OpenCV decoding gives."""
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".bmp"))[::40][:25]
    if not files:
        pytest.skip("benchmarks not available")
    for path in files:
        raw = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(fio.read_image(path), cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)), path
