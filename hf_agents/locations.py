"""Where inputs live: a local directory or a Hub id, and whether saved weights are whole.

A path that does not exist is only taken for a Hub id when it has the `user/name` form and `user` is not a
local directory; anything else gets "no such directory", never a network call.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RECIPES = Path(__file__).resolve().parent / "recipes"  # shipped in the wheel; ./recipes links here
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(path_or_id) -> bool:
    text = str(path_or_id)
    return bool(_HUB_ID.fullmatch(text)) and not Path(text.split("/")[0]).exists() and not text.endswith(
        (".json", ".yaml", ".parquet", ".safetensors"))


def resolve(path_or_id, kind: str, revision: str | None = None) -> Path:
    """A local directory, or a Hub repository of `kind` ('dataset' or 'model') downloaded or found in the cache."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{path_or_id}: a file, not a {kind} directory; give the folder that holds it")
        return path
    if not looks_like_hub_id(path_or_id):
        raise FileNotFoundError(f"{path_or_id}: no such {kind} directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path_or_id), repo_type=kind, revision=revision))
    except Exception as e:  # offline, unknown repo, no access: one message for all
        raise FileNotFoundError(f"{path_or_id}: no such local {kind} directory, and no Hub {kind} of that id could be "
                                f"fetched ({type(e).__name__}); check the path") from None


FINGERPRINTED = ("*.safetensors", "config.json", "adapter_config.json", "hf_agents_base.json", "meta/info.json",
                 "episodes/*.parquet", "*.parquet")


def fingerprint(path) -> str | None:
    """sha256 of what identifies an input: a file's bytes; for a folder, its weights and configs, or a dataset's
    info and episode table (not its frame shards, which the episode table and seeds already pin down)."""
    import hashlib

    path = Path(path)
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted({f for pattern in FINGERPRINTED for f in path.glob(pattern)})
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_problem(path) -> str | None:
    """Why a .safetensors file cannot be read (truncated, bad header), or None when it opens."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:
        return str(e) or type(e).__name__
    return None


def check_saved_model(path, model_types: tuple[str, ...], what: str) -> Path:
    """A saved model directory whose config.json names one of `model_types` and whose weights open."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path}: no config.json; not a saved {what} (give a training run's output_dir "
                                "or one of its checkpoint-* folders)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config}: corrupt config ({e}); re-save the model or pick a checkpoint") from None
    if model_type not in model_types:
        raise ValueError(f"{config}: a '{model_type}' checkpoint, not an hf-agents {what} "
                         f"(model_type {' or '.join(model_types)})")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{path}: no .safetensors weights; hf-agents loads safetensors only")
    for file in weights:
        problem = weights_problem(file)
        if problem:
            raise ValueError(f"{file}: corrupt or partial weights ({problem}); re-save the model or pick a checkpoint")
    return path
