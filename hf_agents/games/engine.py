"""What the ViZDoom games share: the engine writes _vizdoom/ and _vizdoom.ini into the working directory, so each
game starts and stops it inside its own scratch folder (one change of directory at a time per process). The engine's
own console output goes to `engine.log` in that folder: its process can crash while it quits (a segmentation fault
report after every episode has ended), and that report is noise on the user's console."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from pathlib import Path

_CHDIR_LOCK = threading.Lock()
ENGINE_LOG = "engine.log"


@contextlib.contextmanager
def in_dir(path):
    """Run the block with `path` as the working directory, then go back."""
    with _CHDIR_LOCK:
        old = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(old)


@contextlib.contextmanager
def _output_to(log: Path):
    """File descriptors 1 and 2 point to `log` during the block: a process started inside it keeps writing there."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def start_engine(game, scratch) -> None:
    """Start a configured ViZDoom game inside `scratch`, its process's output going to `scratch`/engine.log."""
    with in_dir(scratch), _output_to(Path(scratch) / ENGINE_LOG):
        game.init()


def close_engine(game, scratch) -> None:
    """Stop a ViZDoom game started in `scratch` and remove that folder."""
    with in_dir(scratch):
        game.close()
    shutil.rmtree(scratch, ignore_errors=True)
