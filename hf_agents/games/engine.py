"""What the ViZDoom games share: the engine writes _vizdoom/ and _vizdoom.ini into the working directory, so each
game starts and stops it inside its own scratch folder (one change of directory at a time per process)."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading

_CHDIR_LOCK = threading.Lock()


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


def close_engine(game, scratch) -> None:
    """Stop a ViZDoom game started in `scratch` and remove that folder."""
    with in_dir(scratch):
        game.close()
    shutil.rmtree(scratch, ignore_errors=True)
