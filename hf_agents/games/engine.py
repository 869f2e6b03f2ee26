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

from hf_agents.envs.vector import process_temp_dir

_CHDIR_LOCK = threading.Lock()
ENGINE_LOG = "engine.log"
ENGINE_FOLDER_PREFIX = "hf-agents-vizdoom-"


def make_engine_folder() -> str:
    """A new scratch folder for one game's engine in the temp folder, named with this host and process id; the first
    one a process makes also removes those that this host's killed processes left (`process_temp_dir`)."""
    return process_temp_dir(ENGINE_FOLDER_PREFIX)


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
    with contextlib.ExitStack() as stack:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        stack.callback(os.close, fd)
        for target in (1, 2):
            try:
                saved = os.dup(target)
            except OSError:  # no such descriptor here (a daemon): nothing to redirect
                continue
            stack.callback(os.close, saved)
            stack.callback(os.dup2, saved, target)
            os.dup2(fd, target)
        yield


def start_engine(game, scratch) -> None:
    """Start a configured ViZDoom game inside `scratch`, its process's output going to `scratch`/engine.log (quoted
    in the error when the engine does not start)."""
    log = Path(scratch).resolve() / ENGINE_LOG
    try:
        with in_dir(scratch), _output_to(log):
            game.init()
    except Exception as e:
        output = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"the ViZDoom engine did not start: {e}\nits output ({log}):\n{output or '(none)'}") from e


def close_engine(game, scratch) -> None:
    """Stop a ViZDoom game started in `scratch` and remove that folder."""
    with in_dir(scratch):
        game.close()
    shutil.rmtree(scratch, ignore_errors=True)
