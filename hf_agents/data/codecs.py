"""How frames are stored in the `frame` column: PNG (default: small) or BMP (uncompressed: fast to read).

Both are images in the same `datasets.Image` column, so a dataset keeps one schema whichever it holds and
the Hub viewer shows either; `hf-agents data convert` re-encodes a dataset from one to the other. A window
of same-sized BMP frames decodes as one numpy view of the Arrow buffer (no per-frame decoder call), which
is what keeps a GPU fed; PNG frames decode one by one with PIL.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pyarrow as pa
from PIL import Image

CODECS = ("png", "bmp")
_BMP_HEADER = 54  # BITMAPFILEHEADER (14) + BITMAPINFOHEADER (40)


def encode_frame(frame: np.ndarray, codec: str = "png") -> bytes:
    """One uint8 (H, W, 3) RGB frame -> PNG or BMP bytes."""
    if codec == "png":
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG", compress_level=1)  # level 1: fast, still ~3x smaller
        return buf.getvalue()
    if codec == "bmp":
        return _encode_bmp(frame)
    raise ValueError(f"frame codec {codec!r}: choose one of {', '.join(CODECS)}")


def _encode_bmp(frame: np.ndarray) -> bytes:
    """24-bit top-down BMP (rows BGR, padded to 4 bytes): the pixels are one contiguous block."""
    h, w, _ = frame.shape
    stride = (3 * w + 3) // 4 * 4
    rows = np.zeros((h, stride), np.uint8)
    rows[:, :3 * w] = frame[..., ::-1].reshape(h, 3 * w)
    size = stride * h
    header = struct.pack("<2sIHHI", b"BM", _BMP_HEADER + size, 0, 0, _BMP_HEADER)
    header += struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 24, 0, size, 2835, 2835, 0, 0)
    return header + rows.tobytes()


def decode_frame(data: bytes) -> np.ndarray:
    """Any image's bytes -> uint8 (H, W, 3) RGB."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def decode_frames(values: pa.Array) -> np.ndarray:
    """A column of frame bytes (Arrow binary) -> uint8 (L, H, W, 3); a view where the frames allow it.

    Same-sized uncompressed 24-bit BMPs with one header are read straight from the Arrow buffer;
    anything else (PNG, mixed sizes, damaged bytes) decodes frame by frame.
    """
    pixels = _bmp_view(values)
    if pixels is not None:
        return pixels
    return np.stack([decode_frame(b) for b in values.to_pylist()])


def _bmp_view(values: pa.Array) -> np.ndarray | None:
    n = len(values)
    if n == 0 or values.null_count or not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        return None
    offset_type = np.int32 if pa.types.is_binary(values.type) else np.int64
    offsets = np.frombuffer(values.buffers()[1], offset_type)[values.offset: values.offset + n + 1]
    sizes = np.diff(offsets)
    if sizes[0] <= _BMP_HEADER or (sizes != sizes[0]).any():
        return None
    data = np.frombuffer(values.buffers()[2], np.uint8)[offsets[0]: offsets[-1]].reshape(n, int(sizes[0]))
    header = data[0, :_BMP_HEADER]
    if header[:2].tobytes() != b"BM" or (data[:, :_BMP_HEADER] != header).any():
        return None
    pixel_offset, = struct.unpack_from("<I", header, 10)
    _, w, h, _, bits, compression = struct.unpack_from("<IiiHHI", header, 14)
    stride = (3 * w + 3) // 4 * 4
    if bits != 24 or compression != 0 or w <= 0 or h == 0 or pixel_offset + stride * abs(h) > sizes[0]:
        return None
    rows = data[:, pixel_offset: pixel_offset + stride * abs(h)].reshape(n, abs(h), stride)
    pixels = rows[:, :, :3 * w].reshape(n, abs(h), w, 3)[..., ::-1]  # BGR -> RGB
    return pixels if h < 0 else pixels[:, ::-1]  # positive height: rows stored bottom-up
