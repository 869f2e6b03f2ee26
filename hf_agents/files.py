"""Writing files so that a reader never sees half of one, and hashing them.

Every file the library writes goes through `atomic_write` (a temp file beside it, then a rename); a folder
through `atomic_dir`. `train_results.json` is written by `write_train_results` for every stage. What they
write gets the mode a plain `open()` would give (0o666 less the umask), also when the writer inside made its
file with `tempfile` (mode 0o600, e.g. safetensors' `save_file`); `follow_umask` does the same for a folder
that other libraries wrote (a Trainer's output_dir).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(current)
    return current


def _plain_mode(path: Path) -> None:
    os.chmod(path, 0o666 & ~umask())


def follow_umask(folder) -> None:
    """Give the files under `folder` that a writer made private through `tempfile` (mode 0o600, as safetensors'
    `save_file` does) the mode a plain `open()` gives (0o666 less the umask); other files are left alone."""
    folder = Path(folder)
    if (0o666 & ~umask()) == 0o600 or not folder.is_dir():
        return
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600:
            _plain_mode(path)


@contextmanager
def atomic_path(path):
    """Yield a temp path beside `path` (same suffix) for a writer to fill; it becomes `path` when the block ends
    without an error, and is removed otherwise. The file gets the mode a plain `open()` would give, whatever
    the writer made it with."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        _plain_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path, data: str | bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
    return Path(path)


def atomic_write_json(path, obj, indent: int = 2) -> Path:
    """`obj` as JSON (anything else as its str), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, default=str))


@contextmanager
def atomic_dir(path):
    """Yield a temp folder beside `path`; on success it replaces `path` whole (a kill leaves the old one)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    follow_umask(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def sha256_file(path) -> str:
    """sha256 hex digest of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_train_results(out_dir, metrics: dict, **extra) -> Path:
    """out_dir/train_results.json: the stage's final metrics, then `extra` (config, log_history, ...)."""
    return atomic_write_json(Path(out_dir) / "train_results.json", {"metrics": metrics, **extra})
