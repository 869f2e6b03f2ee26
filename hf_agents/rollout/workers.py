"""Rollout workers: processes that each act for their own share of the envs and step those games themselves.

On a CPU with few cores, acting in one process while the games step in others leaves cores idle: the games wait
while the agent acts, and the agent waits for the slowest game. A rollout worker holds its envs in its own process
(`SerialEnvs`) and a copy of the policy: it acts for its envs, steps their games one after another, and acts again,
so each core runs one chain of work. With one worker per core, rollouts at batch 16 ran 1.5x faster than acting in
one process on 2 cores (the benchmark's rollout section measures both).

`rollout(workers, policy, ...)` is the engine's call with a `RolloutWorkers` in place of a batched env: the policy is
split into one part per worker (`policy.split(sizes)`), each worker plays a share of the episodes, and the episodes
come back as they end. An episode depends only on its reset seed, its id and the policy, never on which worker
plays it, so the episodes are those of the one-process engine. An env that raises is dropped and counted, as in
`BatchedEnv`; a worker that dies or goes silent for `timeout` seconds is replaced, the episodes it was playing are
dropped and counted, and the new worker plays the rest of its share.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import signal
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from hf_agents.envs.vector import preload_modules
from hf_agents.rollout.engine import RolloutResult, keep_episode


def _work(conn, env_fn, num_envs: int) -> None:
    """A rollout worker: make the envs, then play the shares it is sent until told to close."""
    os.setsid()  # own process group: a restart also kills the engine processes its games started
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from hf_agents.envs.serial import SerialEnvs
    from hf_agents.rollout.engine import rollout

    torch.set_num_threads(1)
    try:
        venv = SerialEnvs(env_fn, num_envs)
    except Exception:
        conn.send(("error", "creating the envs failed:\n" + traceback.format_exc(limit=5)))
        return
    conn.send(("ready", None))
    while True:
        try:
            payload = conn.recv_bytes()
        except EOFError:
            break
        if payload == b"close":
            break
        policy, ids, kwargs = pickle.loads(payload)

        def send(episode):  # every ended episode goes back at once; the worker keeps none
            conn.send(("episode", episode))
            return False

        try:
            result = rollout(venv, policy, len(ids), episode_ids=ids, progress=False, accept=send,
                             on_start=lambda ks: conn.send(("start", ks)), **kwargs)
            conn.send(("done", (result.dropped, result.errors, result.env_steps)))
        except Exception:
            conn.send(("error", traceback.format_exc(limit=8)))
    venv.close()


def _kill(proc) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.join(timeout=5)


def _kill_all(procs: list) -> None:
    for proc in procs:
        if proc is not None and proc.is_alive():
            _kill(proc)


@dataclass
class _Share:
    """A worker's episodes in one rollout: which it was sent, started and ended, and when it was last heard from."""

    ids: list[int]
    started: set = field(default_factory=set)
    ended: set = field(default_factory=set)
    heard: float = field(default_factory=time.monotonic)


class RolloutWorkers:
    """`workers` processes (default: one per CPU core) sharing `num_envs` copies of `env_fn()`; pass it to the
    engine's `rollout` in place of a batched env. The policy needs `split(sizes)` and must pickle."""

    def __init__(self, env_fn: Callable, num_envs: int, workers: int | None = None, timeout: float = 300.0,
                 start_timeout: float = 300.0):
        workers = workers or os.cpu_count() or 1
        if not 1 <= workers <= num_envs:
            raise ValueError(f"workers={workers}: choose between 1 and num_envs ({num_envs})")
        self.env_fn, self.num_envs, self.timeout, self.start_timeout = env_fn, num_envs, timeout, start_timeout
        self.sizes = [num_envs // workers + (w < num_envs % workers) for w in range(workers)]
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(preload_modules(env_fn))
        self.procs: list = [None] * workers
        self.conns: list = [None] * workers
        self.restarts = 0
        self._finalizer = weakref.finalize(self, _kill_all, self.procs)
        try:
            for w in range(workers):
                self._launch(w)
            for w in range(workers):
                self._ready(w)
        except BaseException:
            self._finalizer()
            raise

    def _launch(self, w: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_work, args=(child, self.env_fn, self.sizes[w]), daemon=True)
        proc.start()
        child.close()
        self.procs[w], self.conns[w] = proc, parent

    def _ready(self, w: int) -> None:
        conn = self.conns[w]
        if not conn.poll(self.start_timeout):
            raise RuntimeError(f"rollout worker {w} did not make its {self.sizes[w]} envs in {self.start_timeout:.0f} s")
        try:
            status, payload = conn.recv()
        except EOFError:
            raise RuntimeError(f"rollout worker {w} exited while making its envs "
                               f"(exit code {self.procs[w].exitcode})") from None
        if status != "ready":
            raise RuntimeError(f"rollout worker {w}: {payload}")

    def _restart(self, w: int) -> None:
        self.conns[w].close()
        _kill(self.procs[w])
        self.restarts += 1
        self._launch(w)
        self._ready(w)

    def _send(self, w: int, policy, ids: list[int], kwargs: dict) -> _Share:
        self.conns[w].send_bytes(pickle.dumps((policy, ids, kwargs)))
        return _Share(list(ids))

    def rollout(self, policy, num_episodes: int, *, seed=0, seeds=None, spawns=None, variants=None, options=None,
                keep_frames=True, writer=None, source="rollout", accept=None, progress=True, desc="rollout",
                episode_ids=None) -> RolloutResult:
        """The engine's `rollout` (same arguments and result) played by the workers."""
        if not hasattr(policy, "split"):
            raise ValueError(f"rollout workers need a policy with `split(sizes)`; {type(policy).__name__} has none")
        ids = list(range(num_episodes)) if episode_ids is None else list(episode_ids)
        if writer is not None and getattr(policy, "metadata", None):
            writer.metadata.setdefault("policy", dict(policy.metadata))
        parts, k = policy.split(self.sizes), len(self.sizes)
        # accept and the writer run here; the workers send every episode with its frames when either needs them
        kwargs = dict(seed=seed, seeds=seeds, spawns=spawns, variants=variants, options=options,
                      keep_frames=True if writer is not None or accept is not None else keep_frames)
        busy = {w: self._send(w, parts[w], ids[w::k], kwargs) for w in range(k) if ids[w::k]}
        result, bar = RolloutResult(), tqdm(total=len(ids), desc=desc, unit="ep", disable=not progress)
        keep = functools.partial(keep_episode, result=result, keep_frames=keep_frames, writer=writer, source=source,
                                 accept=accept)
        t0 = time.monotonic()
        while busy:
            sentinels = {self.procs[w].sentinel: w for w in busy}
            mp.connection.wait([*(self.conns[w] for w in busy), *sentinels], timeout=1.0)
            for w, share in list(busy.items()):
                self._take(w, share, result, bar, keep)
                if not share.ids:
                    continue
                if self.procs[w].exitcode is not None:
                    why = f"exited (code {self.procs[w].exitcode})"
                elif time.monotonic() - share.heard > self.timeout:
                    why = f"was silent for {self.timeout:.0f} s"
                else:
                    continue
                busy[w] = self._replace(w, share, why, result, bar, parts[w], kwargs)
            busy = {w: share for w, share in busy.items() if share.ids}
            bar.set_postfix(dropped=result.dropped, refresh=False)
        bar.close()
        result.seconds = time.monotonic() - t0
        return result

    def _take(self, w: int, share: _Share, result: RolloutResult, bar, keep) -> None:
        """Everything worker w has sent so far: episodes started and ended, and its share's end."""
        conn = self.conns[w]
        while True:
            try:
                if not conn.poll(0):
                    return
                kind, data = conn.recv()
            except (EOFError, OSError):  # it died: its exit code says so
                return
            share.heard = time.monotonic()
            if kind == "start":
                share.started.update(data)
            elif kind == "episode":
                share.ended.add(data.index)
                bar.update(1)
                keep(data)
            elif kind == "done":
                dropped, errors, steps = data
                result.dropped += dropped
                result.errors += errors
                result.env_steps += steps
                bar.update(dropped)
                share.ids = []
            elif kind == "error":
                raise RuntimeError(f"rollout worker {w} failed:\n{data}")

    def _replace(self, w: int, share: _Share, why: str, result: RolloutResult, bar, policy, kwargs) -> _Share:
        """A worker that died or hung: drop the episodes it was playing, start a fresh one on the rest of its share."""
        lost = sorted(share.started - share.ended)
        result.dropped += len(lost)
        result.errors.append(f"rollout worker {w} {why}: the {len(lost)} episodes it was playing are dropped: {lost}")
        bar.update(len(lost))
        self._restart(w)
        rest = [i for i in share.ids if i not in share.started]
        return self._send(w, policy, rest, kwargs) if rest else _Share([])

    def close(self) -> None:
        for proc, conn in zip(self.procs, self.conns):
            if proc is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                conn.send_bytes(b"close")
            proc.join(timeout=10)
            if proc.is_alive():
                _kill(proc)
            conn.close()
        self._finalizer.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
