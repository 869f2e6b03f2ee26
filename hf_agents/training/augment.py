"""VPT-style image augmentation: drawn per window by the data loader, applied to the whole batch on the
training device.

The loader only draws 7 numbers per window (seeded by seed, epoch and index, so a resumed run draws the
same ones); the pixel work (colour jitter, then one small rotation, shift and scale per window, the same
for its H frames) runs as batched tensor ops beside the model, on the GPU when there is one, instead of
per window in the loader processes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from hf_agents.data.dataset import WindowDataset

# brightness, contrast, saturation factors; rotation (radians); shift x, y (share of the frame); scale
NUM_PARAMS = 7
_GRAY = (0.299, 0.587, 0.114)


def draw_params(rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """One window's augmentation: colour factors in 1 +- 0.2, rotation +-2 degrees, shift +-4%, scale 0.97-1.03."""
    jitter = 0.2 * strength
    return np.array([
        *rng.uniform(1 - jitter, 1 + jitter, 3),
        math.radians(rng.uniform(-2 * strength, 2 * strength)),
        *rng.uniform(-0.04 * strength, 0.04 * strength, 2),
        rng.uniform(0.97, 1.03),
    ], np.float32)


def augment_frames(frames: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """frames (B, T, 3, H, W) uint8 or float in [0, 255], params (B, 7) -> float frames in [0, 255].

    Brightness, contrast (towards the frame's mean grey) and saturation (towards each pixel's grey) are
    linear, so they compose into one 3x3 colour matrix per window plus an offset per frame: one matmul
    and one clamp (torchvision clamps after each of them and shuffles their order; this does neither).
    Then one rotation, shift and scale per window, bilinear, zeros outside, as torchvision's RandomAffine.
    """
    B, T, C, H, W = frames.shape
    x = frames.float().reshape(B, T, C, H * W)
    p = params.to(x.device, torch.float32)
    brightness, contrast, saturation, angle, shift_x, shift_y, scale = p.unbind(1)
    gray = torch.tensor(_GRAY, device=x.device)
    eye, to_gray = torch.eye(3, device=x.device), torch.ones(3, 1, device=x.device) * gray  # rows: grey of a pixel
    s = saturation[:, None, None]
    colour = (contrast * brightness)[:, None, None] * (s * eye + (1 - s) * to_gray)  # (B, 3, 3)
    mean_gray = x.mean(-1) @ gray  # (B, T): each frame's mean grey
    offset = ((1 - contrast) * brightness)[:, None] * mean_gray
    x = (colour[:, None] @ x + offset[..., None, None]).clamp_(0, 255)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output -> input sampling grid
    theta = torch.stack([torch.stack([cos, -sin, -2 * shift_x], -1), torch.stack([sin, cos, -2 * shift_y], -1)], -2)
    # A window's T frames share one transform: sampled as one image of T * C channels, one grid per window
    grid = F.affine_grid(theta, [B, T * C, H, W], align_corners=False)
    out = F.grid_sample(x.reshape(B, T * C, H, W), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(B, T, C, H, W)


class AugmentedWindows(torch.utils.data.Dataset):
    """Training windows, each with its augmentation parameters under `augment` (B, 7 once collated).

    Each draw is seeded by (seed, epoch, index), not the global RNG: loaders fetch ahead of the step
    that is checkpointed, so global-RNG augmentation would differ after a resume. `set_epoch` reaches
    workers started for the epoch, not persistent ones: recipes that augment keep workers per epoch.
    """

    def __init__(self, windows: WindowDataset, strength: float = 1.0, seed: int = 0):
        self.windows, self.strength, self.seed, self.epoch = windows, strength, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer's (accelerate) data loader each epoch
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        item = dict(self.windows[i])
        rng = np.random.default_rng([self.seed % 2**64, self.epoch, int(i)])
        item["augment"] = torch.from_numpy(draw_params(rng, self.strength))
        return item
