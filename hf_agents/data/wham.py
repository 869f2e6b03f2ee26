"""Import and export Microsoft's WHAM recording formats.

(a) `.npz` with `images` uint8 (T, 3, H, W) and `actions` float (T, 16);
(b) a demonstrator folder: `image0.png ... imageN.png` plus `actions.json` {file name: 16 floats}.
One file or folder is one episode. Frames are resized to the dataset's size.

What a studio records beside them is kept (all optional): per-step `rewards` (T,) and privileged state
`state_<key>` (T,) float arrays, the episode's `outcome` (a string; "none" when nothing happened) and
`outcome_step` (int). In an `.npz` they are arrays of those names; in a folder, `episode.json` holds
{"rewards": [...], "state": {"<key>": [...]}, "outcome": "...", "outcome_step": k}.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from hf_agents.actions import NUM_BUTTONS, NUM_COMPONENTS, continuous_to_ids, ids_to_continuous
from hf_agents.data.dataset import TrajectoryDataset
from hf_agents.data.schema import FPS, DatasetFormatError
from hf_agents.data.writer import TrajectoryWriter, check_not_a_source
from hf_agents.files import atomic_path
from hf_agents.frames import resize_frames, to_channels_first, to_channels_last


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 (T, H, W, 3), actions float (T, 16)) from a WHAM `.npz`."""
    try:
        data = np.load(path)
        images, actions = data["images"], data["actions"]
    except KeyError as e:
        raise DatasetFormatError(f"{path}: missing array {e}; a WHAM .npz holds 'images' and 'actions'") from e
    except Exception as e:
        raise DatasetFormatError(f"{path}: not a readable .npz ({e})") from e
    if images.ndim == 4 and len(images) == 0:
        raise DatasetFormatError(f"{path}: 'images' holds 0 frames; an episode needs at least one step")
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise DatasetFormatError(f"{path}: 'images' must be uint8 (T, 3, H, W), got {images.dtype} {images.shape}")
    if actions.shape != (len(images), NUM_COMPONENTS):
        raise DatasetFormatError(f"{path}: 'actions' must be (T, {NUM_COMPONENTS}) with T={len(images)}, "
                                 f"got {actions.shape}")
    return to_channels_last(images), actions


def read_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames, actions) from a demonstrator folder of imageN.png + actions.json."""
    actions_file = path / "actions.json"
    if not actions_file.exists():
        raise DatasetFormatError(f"{actions_file}: missing; a WHAM folder holds imageN.png files and actions.json")
    try:
        table = json.loads(actions_file.read_text())
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{actions_file}: invalid JSON ({e})") from e
    images = sorted(path.glob("image*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or -1))
    if not images:
        raise DatasetFormatError(f"{path}: no imageN.png files")
    frames, actions = [], []
    for img in images:
        if img.name not in table:
            raise DatasetFormatError(f"{actions_file}: no entry for '{img.name}'; "
                                     f"add its {NUM_COMPONENTS} action values")
        values = table[img.name]
        if not isinstance(values, list) or len(values) != NUM_COMPONENTS:
            raise DatasetFormatError(f"{actions_file}: entry '{img.name}' must be a list of {NUM_COMPONENTS} numbers")
        try:
            with Image.open(img) as opened:
                frames.append(np.asarray(opened.convert("RGB")))
        except (OSError, SyntaxError, ValueError) as e:  # truncated or not an image (PIL raises all three)
            raise DatasetFormatError(f"{img}: unreadable image ({e}); re-export the frame or leave this folder "
                                     "out of the import") from None
        actions.append(values)
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DatasetFormatError(f"{path}: frames have different shapes {sorted(shapes)}")
    return np.stack(frames), np.asarray(actions, dtype=np.float64)


def read_extras(path: Path, steps: int) -> dict:
    """The recording's optional reward, state and outcome (module docstring) as `add_episode` keywords."""
    if path.suffix == ".npz":
        with np.load(path) as data:
            raw = {k: data[k] for k in data.files if k not in ("images", "actions")}
        state = {k: raw.pop(k) for k in list(raw) if k.startswith("state_")}
    else:
        extra = path / "episode.json"
        try:
            raw = json.loads(extra.read_text()) if extra.exists() else {}
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"{extra}: invalid JSON ({e})") from None
        state = {f"state_{k}": v for k, v in (raw.pop("state", None) or {}).items()}
    where = path if path.suffix == ".npz" else path / "episode.json"
    unknown = set(raw) - {"rewards", "outcome", "outcome_step"}
    if unknown:
        raise DatasetFormatError(f"{where}: unknown field(s) {sorted(unknown)}; known: rewards, state_<key> (npz) or "
                                 "state (episode.json), outcome, outcome_step")
    out = {}
    for name, values in [("reward", raw.get("rewards")), *state.items()]:
        if values is not None:
            column = np.asarray(values, dtype=np.float32).reshape(-1)
            if len(column) != steps or not np.all(np.isfinite(column)):
                raise DatasetFormatError(f"{where}: '{name if name != 'reward' else 'rewards'}' must hold {steps} "
                                         f"finite numbers (one per frame), got {len(column)}")
            out[name] = column
    if raw.get("outcome") is not None:
        out["outcome"] = str(np.asarray(raw["outcome"]).item())
        out["outcome_step"] = int(np.asarray(raw.get("outcome_step", steps - 1)).item())
        if not 0 <= out["outcome_step"] < steps:
            raise DatasetFormatError(f"{where}: outcome_step {out['outcome_step']} is not a step of the episode "
                                     f"(0..{steps - 1})")
    return out


def import_wham(sources, out, frame_size=(64, 64), overwrite=False, variant="default", source_name=None,
                fps: int = FPS, game: dict | None = None) -> Path:
    """Import WHAM `.npz` files and/or demonstrator folders (or directories of them) into a dataset recorded at
    `fps` frames per second; `game` (a `GameSpec` dict) names the game the recordings come from."""
    files: list[Path] = []
    for s in map(Path, sources):
        if s.is_dir() and not (s / "actions.json").exists():
            found = sorted(s.glob("*.npz")) + sorted(d for d in s.iterdir() if (d / "actions.json").exists())
            if not found:
                raise DatasetFormatError(f"{s}: holds no .npz files or WHAM folders (with actions.json)")
            files += found
        elif s.exists():
            files.append(s)
        else:
            raise FileNotFoundError(f"{s}: no such file or folder")
    check_not_a_source(out, sources)
    with TrajectoryWriter(out, frame_size=frame_size, overwrite=overwrite, fps=fps,
                          metadata={"game": game} if game else None,
                          description=f"Imported from {len(files)} WHAM recording(s).") as writer:
        off_centre = 0
        for f in tqdm(files, desc="import", unit="episode"):
            frames, actions = read_npz(f) if f.suffix == ".npz" else read_folder(f)
            ids = continuous_to_ids(actions, where=str(f))
            off_centre += int((np.abs(ids_to_continuous(ids) - actions)[:, NUM_BUTTONS:] > 1e-4).sum())
            writer.add_episode(resize_frames(frames, writer.frame_size), ids, variant=variant,
                               source=source_name or ("wham-npz" if f.suffix == ".npz" else "wham-folder"),
                               **read_extras(f, len(frames)))
        writer.metadata["import"] = {"recordings": len(files), "stick_values_quantised": off_centre}
    return Path(out)


def export_npz(dataset: TrajectoryDataset, out_dir, overwrite: bool = False) -> list[Path]:
    """Write each episode as a WHAM `.npz` (images uint8 (T, 3, H, W), actions float32 (T, 16)), each file whole
    (a temp file, then a rename). When a write fails (a full or read-only disk), the files this call made are
    removed before the error goes on, so no partial export is left; the files that were there before stay."""
    out_dir = Path(out_dir)
    clash = [out_dir / f"episode_{m['episode_id']:06d}.npz" for m in dataset.episodes]
    clash = [p for p in clash if p.exists()]
    if clash and not overwrite:
        raise FileExistsError(f"{clash[0]}: already exists ({len(clash)} of the files would be replaced); pass "
                              "--overwrite or export to an empty folder")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, made = [], []
    try:
        for e, meta in enumerate(tqdm(dataset.episodes, desc="export", unit="episode")):
            steps = dataset.read(e)
            path = out_dir / f"episode_{meta['episode_id']:06d}.npz"
            new = not path.exists()
            with atomic_path(path) as tmp:
                np.savez_compressed(tmp, images=to_channels_first(steps["frames"]),
                                    actions=ids_to_continuous(steps["actions"]))
            paths.append(path)
            if new:
                made.append(path)
    except BaseException:
        for path in made:
            with contextlib.suppress(OSError):  # a disk gone read-only meanwhile: the error going on says so
                path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # made by this call and now empty
        raise
    return paths
