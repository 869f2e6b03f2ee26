"""Publish a stage's output folder: exactly the files a Hub repository gets (weights, configs, card, evaluation
results, plots, one replay), staged in a folder and uploaded with huggingface_hub, or kept locally (`--to DIR`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hf_agents.cards import model_card_kind, write_model_card

TOP_LEVEL = ("*.safetensors", "config.json", "adapter_config.json", "hf_agents_base.json", "provenance.json",
             "train_results.json", "*.png")
EVALUATION = ("eval/**/eval.json", "eval/**/*.png")


def publish_files(folder: Path) -> list[Path]:
    """What is published, relative to `folder`: never checkpoints, optimizer states, logs or pickles."""
    found = {p for pattern in TOP_LEVEL + EVALUATION for p in folder.glob(pattern) if p.is_file()}
    found |= set(sorted(folder.glob("eval/**/videos/*.gif"))[:1])  # one replay
    return sorted(p.relative_to(folder) for p in found)


def stage(folder, dest, repo_id: str, base_model: str | None = None) -> Path:
    """Copy the published files of `folder` into the empty or new folder `dest` and render its card there."""
    folder, dest = Path(folder), Path(dest)
    if model_card_kind(folder) is None:
        raise FileNotFoundError(f"{folder}: no saved agent, reward model or adapter here (config.json or "
                                "adapter_config.json); give a training run's output_dir")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: not empty; publish into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    for rel in publish_files(folder):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / rel, dest / rel)
    write_model_card(dest, repo_id=repo_id, base_model=base_model)
    return dest


def push(folder, repo_id: str, private: bool = False, to: str | None = None, base_model: str | None = None) -> str:
    """Upload `folder` to the Hub model repository `repo_id`, or with `to`, write what would be uploaded there."""
    if to is not None:
        return str(stage(folder, to, repo_id, base_model))
    with tempfile.TemporaryDirectory(prefix="hf-agents-push-") as tmp:
        staged = stage(folder, Path(tmp) / "repo", repo_id, base_model)
        upload_folder(staged, repo_id, "model", private, f"Upload {Path(folder).name} with hf-agents")
    return repo_id


def upload_folder(folder, repo_id: str, repo_type: str, private: bool = False, message: str | None = None) -> None:
    """Create the Hub repository `repo_id` of `repo_type` ('model' or 'dataset') if needed and upload `folder`."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=message)
