"""Label Studio's brush RLE, in plain numpy.

Label Studio stores a ``brushlabels`` mask as a list of bytes: a bit stream (most significant bit first) that run-length
encodes the flattened RGBA image of the mask (``H * W * 4`` values, row-major, 0 or 255 in every channel; Label
Studio reads the alpha channel). The stream is the ``rle-pack`` format of thi.ng/umbrella, as written by
``label_studio_converter.brush.encode_rle``:

* header: 32 bits value count ``N``; 5 bits ``word_size - 1`` (8 bits per value); four 4-bit fields
  ``rle_size_k - 1`` giving the bit widths of run lengths (Label Studio uses 3, 4, 8 and 16);
* then chunks until ``N`` values are produced. A chunk starts with a flag bit and a 2-bit index ``k`` choosing a run
  length width; then ``length - 1`` in ``rle_sizes[k]`` bits. Flag 1: one ``word_size`` value repeated ``length``
  times. Flag 0: ``length`` literal values follow;
* zero bits pad the stream to whole bytes.

:func:`encode_rle` writes chunks exactly like the converter: a run of one value as a one-value literal chunk, every
longer run as a repeat chunk (runs longer than 65 536 split); only the final padding differs (the converter adds a
whole zero byte when the stream already ends on a byte boundary), which no decoder reads.
"""

from __future__ import annotations

import numpy as np

from finecut.errors import FinecutError

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, values) of the runs of a 1-D array."""
    n = values.size
    ends = np.flatnonzero(values[1:] != values[:-1])
    ends = np.concatenate([ends, [n - 1]])
    lengths = np.diff(np.concatenate([[-1], ends]))
    return lengths.astype(np.int64), values[ends]


def _bits(fields: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate unsigned integer ``fields`` of the given bit ``widths`` (MSB first) into a 0/1 uint8 array."""
    widths = widths.astype(np.int64)
    total = int(widths.sum())
    field_of_bit = np.repeat(np.arange(len(fields)), widths)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    pos_in_field = np.arange(total) - starts[field_of_bit]
    shift = widths[field_of_bit] - 1 - pos_in_field
    return ((fields.astype(np.int64)[field_of_bit] >> shift) & 1).astype(np.uint8)


def encode_rle(values: np.ndarray) -> list[int]:
    """Encode a flat array of 8-bit values (e.g. an RGBA mask) to Label Studio's RLE byte list."""
    arr = np.asarray(values).reshape(-1)
    if arr.size == 0:
        raise FinecutError("cannot encode an empty array as Label Studio RLE")
    if arr.min() < 0 or arr.max() > 255:
        raise FinecutError("Label Studio RLE values must be in 0..255")
    arr = arr.astype(np.int64)
    lengths, vals = _runs(arr)
    max_run = 1 << RLE_SIZES[-1]
    # split runs longer than the widest length field
    pieces = -(-lengths // max_run)
    vals = np.repeat(vals, pieces)
    first = np.cumsum(pieces) - pieces
    piece_idx = np.arange(int(pieces.sum())) - np.repeat(first, pieces)
    run_of_piece = np.repeat(lengths, pieces)
    lengths = np.minimum(max_run, run_of_piece - piece_idx * max_run)
    # choose the narrowest length field that holds length - 1
    caps = np.array([1 << s for s in RLE_SIZES])
    k = np.searchsorted(caps, lengths, side="left")  # first cap >= length
    widths_len = np.array(RLE_SIZES)[k]
    n_chunks = len(lengths)
    fields = np.stack([(lengths > 1).astype(np.int64), k, lengths - 1, vals], axis=1).reshape(-1)
    widths = np.stack([np.ones(n_chunks, np.int64), np.full(n_chunks, 2), widths_len,
                       np.full(n_chunks, WORD_SIZE)], axis=1).reshape(-1)
    header_fields = np.array([arr.size, WORD_SIZE - 1, *(s - 1 for s in RLE_SIZES)], np.int64)
    header_widths = np.array([32, 5, 4, 4, 4, 4], np.int64)
    bits = _bits(np.concatenate([header_fields, fields]), np.concatenate([header_widths, widths]))
    return np.packbits(bits).tolist()


class _BitReader:
    def __init__(self, data: bytes | list[int]) -> None:
        self.bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.bits.size:
            raise FinecutError("Label Studio RLE is truncated")
        chunk = self.bits[self.pos : self.pos + n]
        self.pos += n
        value = 0
        for b in chunk.tolist():
            value = (value << 1) | b
        return value


def decode_rle(data: bytes | list[int]) -> np.ndarray:
    """Decode Label Studio's RLE byte list to the flat uint8 array it encodes."""
    try:
        arr = np.asarray(data, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise FinecutError(f"Label Studio RLE must be a list of bytes: {exc}") from exc
    if arr.ndim != 1 or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise FinecutError("Label Studio RLE must be a flat list of integers in 0..255")
    reader = _BitReader(arr.astype(np.uint8))
    num = reader.read(32)
    word = reader.read(5) + 1
    sizes = [reader.read(4) + 1 for _ in range(4)]
    if word > 16:
        raise FinecutError(f"unsupported Label Studio RLE word size {word}")
    out = np.zeros(num, dtype=np.uint16 if word > 8 else np.uint8)
    i = 0
    while i < num:
        repeat = reader.read(1)
        j = min(num, i + 1 + reader.read(sizes[reader.read(2)]))
        if repeat:
            out[i:j] = reader.read(word)
        else:
            for t in range(i, j):
                out[t] = reader.read(word)
        i = j
    return out


def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """A bool mask (H×W) as Label Studio brush RLE (RGBA, 255 where the mask is set)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise FinecutError(f"mask must be 2-D, got shape {m.shape}")
    return encode_rle(np.repeat(m.reshape(-1).astype(np.uint8) * 255, 4))


def brush_rle_to_mask(data: bytes | list[int], height: int, width: int) -> np.ndarray:
    """Decode Label Studio brush RLE to a bool mask (alpha channel > 0)."""
    flat = decode_rle(data)
    if flat.size != height * width * 4:
        raise FinecutError(
            f"Label Studio RLE holds {flat.size} values, expected {height}x{width}x4 = {height * width * 4}"
        )
    return flat.reshape(height, width, 4)[:, :, 3] > 0
