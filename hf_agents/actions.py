"""The gamepad contract: 12 buttons + 4 stick axes, as Bleeding Edge / WHAM recordings store them.

Three views of one action:
- continuous: float (..., 16), buttons in {0, 1}, sticks in [-1, 1];
- ids: int (..., 16), buttons in {0, 1}, sticks in 0..10 (bucket index); the model's targets;
- tokens: int (..., 16), ids shifted by a per-component offset into one 68-id vocabulary.
Every function takes numpy arrays or torch tensors and returns the same kind.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_BUTTONS = 12
NUM_STICKS = 4
NUM_COMPONENTS = NUM_BUTTONS + NUM_STICKS
NUM_BUCKETS = 11
BUTTON_NAMES = ("a", "b", "x", "y", "lb", "rb", "lt", "rt", "start", "back", "ls", "rs")
STICK_NAMES = ("left_x", "left_y", "right_x", "right_y")
COMPONENT_NAMES = BUTTON_NAMES + STICK_NAMES
LEFT_X, LEFT_Y, RIGHT_X, RIGHT_Y = range(NUM_BUTTONS, NUM_COMPONENTS)  # component index of each stick axis
# Bucket centres of a stick axis; recordings hold exactly these values.
STICK_CENTRES = np.array([-1.0, -0.85, -0.625, -0.375, -0.15, 0.0, 0.15, 0.375, 0.625, 0.85, 1.0], dtype=np.float32)
CENTRE_BUCKET = 5
COMPONENT_SIZES = np.array([2] * NUM_BUTTONS + [NUM_BUCKETS] * NUM_STICKS, dtype=np.int64)
TOKEN_OFFSETS = np.concatenate([[0], np.cumsum(COMPONENT_SIZES)[:-1]]).astype(np.int64)
VOCAB_SIZE = int(COMPONENT_SIZES.sum())  # 68
NOOP_IDS = np.array([0] * NUM_BUTTONS + [CENTRE_BUCKET] * NUM_STICKS, dtype=np.int64)


class ActionError(ValueError):
    """An action outside the gamepad contract."""


def _like(x, array: np.ndarray):
    """`array` as the same kind (numpy/torch) and device as `x`."""
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(array, device=x.device)
    return array


def _check_last_dim(x, where: str) -> None:
    if x.ndim == 0 or x.shape[-1] != NUM_COMPONENTS:
        raise ActionError(f"{where}: expected a last dimension of {NUM_COMPONENTS} action components, got shape {tuple(x.shape)}")


def _bad_component(mask) -> str:
    """Name of the first component where `mask` (..., 16) is true."""
    cols = mask.reshape(-1, NUM_COMPONENTS).any(0)
    idx = int(np.flatnonzero(np.asarray(cols.cpu() if isinstance(cols, torch.Tensor) else cols))[0])
    return COMPONENT_NAMES[idx]


def continuous_to_ids(actions, atol: float = 1e-4, where: str = "actions"):
    """Encode continuous gamepad actions to bucket ids (nearest stick centre).

    Raises ActionError for NaN, buttons other than 0/1 or sticks outside [-1, 1].
    """
    _check_last_dim(actions, where)
    is_torch = isinstance(actions, torch.Tensor)
    x = actions.float() if is_torch else np.asarray(actions, dtype=np.float32)
    buttons, sticks = x[..., :NUM_BUTTONS], x[..., NUM_BUTTONS:]
    bad_button = ~((abs(buttons) <= atol) | (abs(buttons - 1) <= atol))
    bad_stick = ~((sticks >= -1 - atol) & (sticks <= 1 + atol))  # NaN fails both
    bad = torch.cat([bad_button, bad_stick], -1) if is_torch else np.concatenate([bad_button, bad_stick], -1)
    if bad.any():
        name = _bad_component(bad)
        raise ActionError(
            f"{where}: component '{name}' is outside the gamepad contract "
            "(buttons must be 0 or 1, sticks in [-1, 1], no NaN)"
        )
    centres = _like(x, STICK_CENTRES)
    stick_ids = abs(sticks[..., None] - centres).argmin(-1)
    button_ids = (buttons > 0.5).long() if is_torch else (buttons > 0.5).astype(np.int64)
    if is_torch:
        return torch.cat([button_ids, stick_ids.long()], -1)
    return np.concatenate([button_ids, stick_ids.astype(np.int64)], -1)


def validate_ids(ids, where: str = "action ids"):
    """Raise ActionError unless every id is within its component's range; returns ids."""
    _check_last_dim(ids, where)
    sizes = _like(ids, COMPONENT_SIZES)
    bad = (ids < 0) | (ids >= sizes)
    if bad.any():
        raise ActionError(f"{where}: component '{_bad_component(bad)}' has an id outside 0..size-1 (buttons 0-1, sticks 0-10)")
    return ids


def ids_to_continuous(ids):
    """Decode bucket ids to continuous actions (sticks at the bucket centre)."""
    validate_ids(ids)
    centres = _like(ids, STICK_CENTRES)
    if isinstance(ids, torch.Tensor):
        return torch.cat([ids[..., :NUM_BUTTONS].float(), centres[ids[..., NUM_BUTTONS:]]], -1)
    return np.concatenate([ids[..., :NUM_BUTTONS].astype(np.float32), STICK_CENTRES[ids[..., NUM_BUTTONS:]]], -1)


def ids_to_tokens(ids):
    """Bucket ids -> ids in the shared 68-token vocabulary."""
    validate_ids(ids)
    return ids + _like(ids, TOKEN_OFFSETS)


def tokens_to_ids(tokens):
    """Shared-vocabulary tokens -> per-component bucket ids."""
    _check_last_dim(tokens, "tokens")
    return validate_ids(tokens - _like(tokens, TOKEN_OFFSETS), where="tokens")


def is_noop(ids):
    """True where the action is all buttons released and all sticks centred; shape (...)."""
    _check_last_dim(ids, "action ids")
    return (ids == _like(ids, NOOP_IDS)).all(-1)


def action_space():
    """The Gymnasium space of action ids: MultiDiscrete([2]*12 + [11]*4)."""
    from gymnasium.spaces import MultiDiscrete

    return MultiDiscrete(COMPONENT_SIZES.copy())
