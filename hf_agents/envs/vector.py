"""A batch of envs in subprocess workers that survives crashed and hung workers.

A worker that dies, hangs past `step_timeout` or raises is replaced by a fresh one; its episode is
reported as ended with `info["error"]` set, so callers drop it (paper C.4) and nothing else is lost.
Resets are explicit (`reset(indices)`): the rollout engine decides when an env starts a new episode.
Image observations travel through shared memory (`shared_memory=True`): a worker writes its frame into its own
slot of one file in /dev/shm and pipes only the reward, flags and info.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np


def _worker(conn, env_fn):
    os.setsid()  # own process group: a restart also kills the engine process the env started
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)  # one BLAS/torch thread per env worker
    except ImportError:
        pass
    try:
        env, broken = env_fn(), None
    except Exception:
        env, broken = None, "creating the env failed:\n" + traceback.format_exc(limit=5)
    slot = None  # this worker's frame in shared memory, once the parent sent "share"
    while True:
        try:
            cmd, data = conn.recv()
        except EOFError:
            break
        if broken:  # answer every command with the construction error, so the caller sees why
            conn.send(("error", broken))
            continue
        try:
            if cmd == "step":
                conn.send(("ok", _in_slot(env.step(data), slot)))
            elif cmd == "reset":
                conn.send(("ok", _in_slot(env.reset(**data), slot)))
            elif cmd == "share":
                path, index, shape, dtype = data
                slot = np.memmap(path, dtype=dtype, mode="r+", shape=(index + 1, *shape))[index]
                conn.send(("ok", None))
            elif cmd == "spaces":
                conn.send(("ok", (env.observation_space, env.action_space, picklable_metadata(env.metadata))))
            elif cmd == "close":
                env.close()
                conn.send(("ok", None))
                break
        except Exception:
            conn.send(("error", traceback.format_exc(limit=5)))
    conn.close()


def _in_slot(answer: tuple, slot) -> tuple:
    """A step's or reset's answer with its observation written to shared memory and replaced by None."""
    obs = answer[0]
    if slot is None or not isinstance(obs, np.ndarray) or obs.shape != slot.shape or obs.dtype != slot.dtype:
        return answer  # not shared, or an observation the slot cannot hold: it goes through the pipe
    slot[...] = obs
    return (None, *answer[1:])


class SharedFrames:
    """One file in shared memory (/dev/shm where there is one) holding every env's latest observation. Its name holds
    the creating process's id: a process that was killed cannot remove its file, so the next one removes it."""

    PREFIX = "hf-agents-frames-"

    def __init__(self, num_envs: int, shape: tuple, dtype):
        folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        remove_orphans(Path(folder or tempfile.gettempdir()), self.PREFIX)
        fd, self.path = tempfile.mkstemp(prefix=f"{self.PREFIX}{os.getpid()}-", dir=folder)
        os.close(fd)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.frames = np.memmap(self.path, dtype=self.dtype, mode="w+", shape=(num_envs, *self.shape))
        self._remove = weakref.finalize(self, Path(self.path).unlink, missing_ok=True)

    def share_args(self, i: int) -> tuple:
        return self.path, i, self.shape, self.dtype.str

    def close(self) -> None:
        self._remove()


def remove_orphans(folder: Path, prefix: str) -> None:
    """Remove the files and folders in `folder` named `prefix` + a process id + "-..." whose process no longer runs
    (killed before it could remove its own): frame files, scratch folders, engine folders."""
    for path in folder.glob(f"{prefix}*-*"):
        pid = path.name[len(prefix):].split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        except PermissionError:  # another user's process, alive
            pass


def picklable_metadata(metadata) -> dict:
    """The env's metadata entries that can cross the pipe."""
    out = {}
    for key, value in dict(metadata or {}).items():
        try:
            pickle.dumps(value)
            out[key] = value
        except Exception:
            pass
    return out


# Heavy libraries a worker would otherwise import again: every forkserver child re-runs the main script's
# imports (Python 3.11 does not preload `__main__` in the fork server).
_HEAVY_MODULES = ("torch", "transformers", "datasets", "accelerate", "hf_agents.models")


def preload_modules(env_fn) -> list[str]:
    """Modules the fork server imports once, so each worker starts as a cheap fork.

    Without this, 16 workers on 2 cores each import torch (+ transformers when the main script does) and
    take 20-50 s to start instead of 4 s. Has no effect once this process's fork server is running.
    """
    env_module = getattr(getattr(env_fn, "func", env_fn), "__module__", None)
    names = ["torch"] + [m for m in _HEAVY_MODULES[1:] if m in sys.modules]
    return names + ([env_module] if env_module and env_module != "__main__" else [])


# A game process's temporary files (a ViZDoom engine's scratch folder) go to a folder of its own, named with the host
# and the id of the process that started it: a killed game process cannot remove what it wrote, so
# `kill_process_group` does, and a folder whose starting process was killed too is removed by the next one on the
# same host that starts a game process. What game processes share (a generated map) stays in the temp folder they
# were started from: `shared_temp_dir`.
SCRATCH_PREFIX = "hf-agents-games-"
_SHARED_TMPDIR = "HF_AGENTS_SHARED_TMPDIR"


def scratch_prefix() -> str:
    """The start of this process's game processes' scratch folder names."""
    return f"{SCRATCH_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def shared_temp_dir() -> Path:
    """The temp folder for files every game process may reuse (in a game process: the one it was started from)."""
    return Path(os.environ.get(_SHARED_TMPDIR) or tempfile.gettempdir())


def process_temp_dir(prefix: str) -> str:
    """A new folder in the temp folder named `prefix`, this host and this process id. The first one of a prefix a
    process makes in a temp folder also removes those that this host's killed processes left there."""
    host = socket.gethostname()
    _remove_host_orphans(tempfile.gettempdir(), f"{prefix}{host}-")
    return tempfile.mkdtemp(prefix=f"{prefix}{host}-{os.getpid()}-")


@functools.cache
def _remove_host_orphans(folder: str, prefix: str) -> None:
    remove_orphans(Path(folder), prefix)


def start_game_process(ctx, target: Callable, *args):
    """Start `target(*args)` as a daemon process of `ctx`, its temporary files in a scratch folder of its own."""
    scratch = process_temp_dir(SCRATCH_PREFIX)
    proc = ctx.Process(target=_in_scratch, args=(scratch, target, *args), daemon=True)
    proc.scratch = scratch
    try:
        proc.start()
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return proc


def _in_scratch(scratch: str, target: Callable, *args) -> None:
    os.environ.setdefault(_SHARED_TMPDIR, str(Path(scratch).parent))
    os.environ["TMPDIR"] = tempfile.tempdir = scratch  # also for the processes it starts (a game's engine)
    target(*args)


def kill_process_group(proc) -> None:
    """Kill a worker that called `os.setsid()` and every process it started (a game's engine), even one that died
    already; a worker killed before it made its own group is killed alone. Its scratch folder goes with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.is_alive():
        proc.kill()
    proc.join(timeout=5)
    if getattr(proc, "scratch", None):
        shutil.rmtree(proc.scratch, ignore_errors=True)


class BatchedEnv:
    """`num_envs` copies of `env_fn()` stepping in parallel, one process each; `metadata` is the env's."""

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int, step_timeout: float = 30.0,
                 reset_timeout: float = 60.0, shared_memory: bool = True):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs}: a batch needs at least 1 game process")
        self.env_fn, self.num_envs = env_fn, num_envs
        self.step_timeout, self.reset_timeout = step_timeout, reset_timeout
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(preload_modules(env_fn))
        self.workers: list = [None] * num_envs
        self.restarts = 0
        self.shared: SharedFrames | None = None
        try:
            for i in range(num_envs):
                self._start(i)
            self.observation_space, self.action_space, self.metadata = self._call(0, "spaces", None, reset_timeout)
            space = self.observation_space
            self._last_obs = [np.zeros(space.shape, space.dtype)] * num_envs
            if shared_memory and isinstance(space, gym.spaces.Box) and len(space.shape) == 3:
                self.shared = SharedFrames(num_envs, space.shape, space.dtype)
                for i in range(num_envs):
                    self._share(i)
        except BaseException:  # e.g. the game cannot be made: no worker (nor the engine it started) outlives the error
            self._kill()
            raise

    # -- worker management -------------------------------------------------------------------------
    def _start(self, i: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = start_game_process(self.ctx, _worker, child, self.env_fn)
        child.close()
        self.workers[i] = (proc, parent)
        if self.shared is not None:
            self._share(i)

    def _share(self, i: int) -> None:
        """Tell worker i its slot of the shared frames. A worker that cannot take it keeps piping its frames (a
        broken one answers its next command with why)."""
        proc, conn = self.workers[i]
        try:
            conn.send(("share", self.shared.share_args(i)))
            if conn.poll(self.reset_timeout):
                conn.recv()
                return
        except (EOFError, ConnectionError, OSError):
            return  # its next command finds it dead and restarts it
        with contextlib.suppress(ProcessLookupError, PermissionError):  # hung while starting: a late answer must not
            os.killpg(proc.pid, signal.SIGKILL)  # be taken for its next command's; that command restarts it

    def _kill_worker(self, i: int) -> None:
        """Kill worker i at once, with its process group (the engine process its env started)."""
        proc, conn = self.workers[i]
        conn.close()
        kill_process_group(proc)

    def _restart(self, i: int) -> None:
        self._kill_worker(i)
        self.restarts += 1
        self._start(i)

    def _receive(self, i: int, timeout: float):
        """('ok', result) or ('error', message); restarts the worker on any failure."""
        proc, conn = self.workers[i]
        deadline = time.monotonic() + timeout
        try:
            # Poll in slices: a dead worker's pipe may stay open (the engine's own process inherits it).
            while not conn.poll(0.05):
                if not proc.is_alive():
                    raise EOFError
                if time.monotonic() > deadline:
                    break
            if conn.poll(0):
                status, payload = conn.recv()
            else:
                status, payload = "error", f"env worker {i} hung for more than {timeout:.0f}s"
        except (EOFError, ConnectionError, OSError):
            status, payload = "error", f"env worker {i} died (exit code {proc.exitcode})"
        if status == "error":
            self._restart(i)
        return status, payload

    def _send(self, i: int, cmd: str, data) -> bool:
        try:
            self.workers[i][1].send((cmd, data))
            return True
        except (BrokenPipeError, ConnectionError, OSError):
            return False

    def _call(self, i, cmd, data, timeout):
        if not self._send(i, cmd, data):
            self._restart(i)
            self._send(i, cmd, data)
        status, payload = self._receive(i, timeout)
        if status == "error":
            raise RuntimeError(f"env worker {i} failed on {cmd}: {payload}")
        return payload

    # -- gym-like API --------------------------------------------------------------------------------
    def reset(self, indices=None, seeds=None, options=None):
        """Reset some envs (default all); returns their (observations, infos) in the order of `indices`."""
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        seeds = seeds if seeds is not None else [None] * len(indices)
        options = options if options is not None else [None] * len(indices)
        self.reset_async(indices, seeds, options)
        return self.reset_wait(indices, seeds, options)

    def reset_async(self, indices, seeds, options) -> None:
        """Send the resets and return at once (a game loads its map while the caller works); `reset_wait` collects."""
        for i, s, o in zip(indices, seeds, options):
            if not self._send(i, "reset", {"seed": s, "options": o}):
                self._restart(i)
                self._send(i, "reset", {"seed": s, "options": o})

    def reset_wait(self, indices, seeds, options):
        """The (observations, infos) of the resets `reset_async` sent; a failed one is retried on a fresh worker."""
        obs, infos = [], []
        for i, s, o in zip(indices, seeds, options):
            status, payload = self._receive(i, self.reset_timeout)
            if status == "error":  # one retry on a fresh worker
                payload = self._call(i, "reset", {"seed": s, "options": o}, self.reset_timeout)
            o = self._frame(i, payload[0])
            self._last_obs[i] = o
            obs.append(o)
            infos.append(payload[1])
        return np.stack(obs), infos

    def step(self, actions, indices=None):
        """Step the given envs (default all). An env that failed reports terminated=True and info['error']."""
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        return self.step_wait(indices, self.step_async(actions, indices))

    def step_async(self, actions, indices) -> list[bool]:
        """Send the actions and return at once (the games step while the caller works); `step_wait` collects."""
        return [self._send(i, "step", a) for i, a in zip(indices, actions)]

    def step_wait(self, indices, sent: list[bool]):
        """The answers of the envs `step_async` sent to: (observations, rewards, terminated, truncated, infos)."""
        obs, rewards, terminated, truncated, infos = [], [], [], [], []
        for i, ok in zip(indices, sent):
            start = time.monotonic()
            status, payload = self._receive(i, self.step_timeout) if ok else ("error", f"env worker {i} is gone")
            if not ok:
                self._restart(i)
            if status == "ok":
                o, r, te, tr, info = payload
                o = self._last_obs[i] = self._frame(i, o)
            else:
                o, r, te, tr, info = self._last_obs[i], 0.0, True, False, {"error": payload}
            info["step_seconds"] = time.monotonic() - start
            obs.append(o)
            rewards.append(r)
            terminated.append(te)
            truncated.append(tr)
            infos.append(info)
        return np.stack(obs), np.asarray(rewards, np.float32), np.asarray(terminated), np.asarray(truncated), infos

    def _frame(self, i: int, obs):
        """Worker i's observation: where it sent None, a view of its shared-memory slot, which holds that frame until
        its next command (`reset_wait` / `step_wait` copy the frames once, into the batch they return)."""
        return self.shared.frames[i] if obs is None and self.shared is not None else obs

    def _kill(self) -> None:
        """Kill every worker started so far, and remove the frame file."""
        for i, worker in enumerate(self.workers):
            if worker is not None:
                self._kill_worker(i)
        if self.shared is not None:
            self.shared.close()

    def close(self) -> None:
        for i, (proc, conn) in enumerate(self.workers):
            if self._send(i, "close", None):
                try:
                    if conn.poll(5):
                        conn.recv()
                except (EOFError, OSError):
                    pass
            kill_process_group(proc)  # after it closed its env: only what is left of it, and its scratch folder
            conn.close()
        if self.shared is not None:
            self.shared.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FaultInjection(gym.Wrapper):
    """Makes an env crash (exit the process), hang or raise at a given step, to test recovery.

    reset(options={"crash_at": k}), {"hang_at": k} or {"raise_at": k}; the fault fires on the k-th step of that episode.
    """

    def reset(self, *, seed=None, options=None):
        options = dict(options or {})
        self._crash_at, self._hang_at = options.pop("crash_at", None), options.pop("hang_at", None)
        self._raise_at = options.pop("raise_at", None)
        self._t = 0
        return self.env.reset(seed=seed, options=options or None)

    def step(self, action):
        self._t += 1
        if self._t == self._crash_at:
            os._exit(3)
        if self._t == self._hang_at:
            time.sleep(3600)
        if self._t == self._raise_at:
            raise RuntimeError(f"fault injected at step {self._t}")
        return self.env.step(action)
