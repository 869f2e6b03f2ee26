"""Publish a stage's output folder: exactly the files a Hub repository gets (weights, configs, card, evaluation
results, plots, one replay), staged in a folder and uploaded with huggingface_hub, or kept locally (`--to DIR`).

What is published names other models and datasets by Hub id, never by a local path: an adapter's base agent
(adapter_config.json's `base_model_name_or_path`, hf_agents_base.json's `base_model`) is the `--base-model` given
or the Hub id recorded at training; every other local path in the published JSON files becomes its folder's name
(a shipped recipe `recipes/NAME.yaml`), and the card names only Hub ids in its metadata.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from hf_agents.cards import (
    hub_id,
    hub_names,
    model_card_kind,
    recorded_base,
    without_local_paths,
    write_model_card,
)
from hf_agents.files import follow_umask

TOP_LEVEL = ("*.safetensors", "config.json", "adapter_config.json", "hf_agents_base.json", "provenance.json",
             "train_results.json", "eval.json", "*.png")
EVALUATION = ("eval/**/eval.json", "eval/**/*.png")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def publish_files(folder: Path) -> list[Path]:
    """What is published, relative to `folder`: never checkpoints, optimizer states, logs, pickles or README.md
    (the card is rendered again for the repository)."""
    found = {p for pattern in TOP_LEVEL + EVALUATION for p in folder.glob(pattern) if p.is_file()}
    found |= set(sorted(folder.glob("eval/**/videos/*.gif"))[:1])  # one replay
    return sorted(p.relative_to(folder) for p in found)


def check_hub_id(value: str, what: str, local_too: bool = True) -> str:
    """`value` if it has the form of a Hub repository id (user/name); a local path (with `local_too`, also a
    relative one that exists here) is refused with the fix."""
    local = local_too and isinstance(value, str) and Path(value).expanduser().exists()
    if not isinstance(value, str) or not _REPO_ID.fullmatch(value) or local:
        raise ValueError(f"{what} {value!r}: {'a local folder, ' if local else ''}not a Hub id; give USER/NAME, the "
                         "repository it is (or will be) published as")
    return value


def base_for_publishing(folder, kind: str, base_model: str | None) -> str | None:
    """The base agent's Hub id for a published model: `base_model`, else a Hub id recorded at training; an adapter
    whose base is only a local folder needs `base_model` (it cannot be loaded from the Hub without it)."""
    if base_model:
        return check_hub_id(base_model, "--base-model")
    recorded = recorded_base(folder, kind)
    try:
        made = json.loads((Path(folder) / "provenance.json").read_text())
    except (OSError, ValueError):
        made = {}
    if hub_id(recorded, made):
        return recorded
    if kind == "adapter":
        where = f" the local agent {recorded}" if recorded else " an agent it does not record"
        raise ValueError(f"{folder}: this adapter was trained on{where}; pass --base-model USER/NAME, the Hub id of "
                         f"that agent (publish it first: hf-agents push {recorded or 'AGENT'} USER/NAME)")
    return None


def stage(folder, dest, repo_id: str, base_model: str | None = None, datasets: list[str] | None = None) -> Path:
    """Copy the published files of `folder` into the empty or new folder `dest`, Hub ids in place of local paths,
    and render its card there. Every check comes before anything is written; `dest` appears whole or not at all."""
    folder, dest = Path(folder), Path(dest)
    kind = model_card_kind(folder)
    if kind is None:
        raise FileNotFoundError(f"{folder}: no saved agent, reward model or adapter here (config.json or "
                                "adapter_config.json); give a training run's output_dir")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest}: {'not empty' if dest.is_dir() else 'a file'}; publish into a new folder")
    check_hub_id(repo_id, "repository", local_too=False)
    datasets = [check_hub_id(d, "--dataset") for d in datasets or []]
    base = base_for_publishing(folder, kind, base_model)
    names = hub_names(folder, base, datasets)
    tmp = dest.with_name(f"{dest.name}.partial-{os.getpid()}")  # beside dest: renamed into place when whole
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for rel in publish_files(folder):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if rel.suffix == ".json":
                (tmp / rel).write_text(json.dumps(_published_json(folder / rel, base, names), indent=2))
            else:
                shutil.copy2(folder / rel, tmp / rel)
        write_model_card(tmp, repo_id=repo_id, base_model=base, datasets=datasets, source=folder)
        follow_umask(tmp)
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        os.replace(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(dest)) from None  # the folder the user named, not the temp one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _published_json(path: Path, base: str | None, names: dict[str, str]):
    """A JSON file as published: local paths as Hub ids or folder names; an adapter's base as its Hub id."""
    data = without_local_paths(json.loads(path.read_text()), names)
    if path.name == "adapter_config.json" and isinstance(data, dict):
        data["base_model_name_or_path"] = base
    if path.name == "hf_agents_base.json" and isinstance(data, dict):
        data["base_model"] = base
    return data


def push(folder, repo_id: str, private: bool = False, to: str | None = None, base_model: str | None = None,
         datasets: list[str] | None = None) -> str:
    """Upload `folder` to the Hub model repository `repo_id`, or with `to`, write what would be uploaded there.
    base_model / datasets: Hub ids of the base agent and the training datasets (see `stage`)."""
    if to is not None:
        return str(stage(folder, to, repo_id, base_model, datasets))
    with tempfile.TemporaryDirectory(prefix="hf-agents-push-") as tmp:
        staged = stage(folder, Path(tmp) / "repo", repo_id, base_model, datasets)
        upload_folder(staged, repo_id, "model", private, f"Upload {Path(folder).name} with hf-agents")
    return repo_id


def upload_folder(folder, repo_id: str, repo_type: str, private: bool = False, message: str | None = None) -> None:
    """Create the Hub repository `repo_id` of `repo_type` ('model' or 'dataset') if needed and upload `folder`."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=message)
