"""Frames, in one place. One layout in memory: games, datasets, rollouts and videos hold frames channels-last
(..., H, W, 3) uint8, as images are stored; `to_model` turns a batch into the model's channels-first tensor
where it becomes one, and `scale_pixels` is the one uint8 -> float step. The channels-first numpy helpers are
for file formats that store frames that way (WHAM's .npz). Every resize and frame-size check goes through here.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class FrameLayoutError(ValueError):
    """Frames that are not RGB images in the expected layout."""


def resize(frame: np.ndarray, size) -> np.ndarray:
    """One RGB frame (H, W, 3) -> (h, w, 3) uint8, bilinear; `size` is an int or (h, w)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    frame = to_uint8(frame)
    if frame.shape[:2] == (h, w):
        return frame
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))


def resize_frames(frames: np.ndarray, size) -> np.ndarray:
    """(T, H, W, 3) -> (T, h, w, 3) uint8."""
    return np.stack([resize(f, size) for f in frames]) if len(frames) else np.asarray(frames, np.uint8)


def to_uint8(frame) -> np.ndarray:
    """Floats in [0, 1] or [0, 255] (or uint8) -> uint8."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame
    scale = 255.0 if frame.size and float(np.nanmax(frame)) <= 1.0 else 1.0
    return np.clip(np.nan_to_num(frame) * scale, 0, 255).astype(np.uint8)


def check_channels_last(frames, where: str = "frames") -> None:
    """Raise FrameLayoutError unless `frames` is (..., H, W, 3)."""
    shape = tuple(frames.shape)
    if len(shape) < 3 or shape[-1] != 3:
        hint = " (channels-first? use hf_agents.frames.to_channels_last)" if len(shape) >= 3 and shape[-3] == 3 else ""
        raise FrameLayoutError(f"{where}: frames must be (..., H, W, 3) RGB, got {shape}{hint}")


def to_model(frames, device=None, contiguous: bool = False) -> torch.Tensor:
    """Channels-last frames (..., H, W, 3) (numpy or torch) -> the model's (..., 3, H, W) uint8 tensor (a view;
    `contiguous=True`: a copy in that layout, as data loaders hand batches on)."""
    check_channels_last(frames)
    x = frames if torch.is_tensor(frames) else torch.from_numpy(np.ascontiguousarray(frames))
    x = x.to(device).movedim(-1, -3)
    return x.contiguous() if contiguous else x


def scale_pixels(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (or float in [0, 255]) pixels -> `dtype` in [0, 1]."""
    return frames.to(dtype) / 255.0


def check_frame_size(found, expected, where: str, taker: str, fix: str) -> None:
    """Raise FrameLayoutError unless frames of `found` size (int or (h, w)) are what `taker` takes."""
    as_pair = lambda s: (s, s) if isinstance(s, int) else tuple(int(v) for v in s)  # noqa: E731
    if as_pair(found) != as_pair(expected):
        raise FrameLayoutError(f"{where}: frames are {'x'.join(map(str, as_pair(found)))} but {taker} takes "
                               f"{'x'.join(map(str, as_pair(expected)))}; {fix}")


def to_channels_first(frames) -> np.ndarray:
    """Channels-last numpy frames (..., H, W, 3) -> the model's layout (..., 3, H, W), contiguous numpy
    (for data loaders; `to_model` does the same to a tensor)."""
    check_channels_last(frames)
    return np.ascontiguousarray(np.moveaxis(np.asarray(frames), -1, -3))


def to_channels_last(frames) -> np.ndarray:
    """The model's (..., 3, H, W) -> (..., H, W, 3) numpy, e.g. for videos."""
    x = frames.detach().cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if x.ndim < 3 or x.shape[-3] != 3:
        raise FrameLayoutError(f"frames must be (..., 3, H, W) RGB, got {tuple(x.shape)}")
    return np.ascontiguousarray(np.moveaxis(x, -3, -1))
