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
`BatchedEnv`; a worker that dies or gives no sign of life for `timeout` seconds (it sends one at least every
second while its games step) is replaced, the episodes it was playing are dropped and counted, and the new worker
plays the rest of its share.
"""

from __future__ import annotations

import functools
import io
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from hf_agents.envs.vector import kill_process_group, picklable_metadata, preload_modules, start_game_process
from hf_agents.rollout.engine import RolloutResult, keep_episode, split_sizes


def _work(conn, env_fn, num_envs: int) -> None:
    """A rollout worker: make the envs, then play the shares it is sent until told to close."""
    os.setsid()  # own process group: a restart also kills the engine processes its games start
    os.set_inheritable(conn.fileno(), False)  # those engines must not hold the pipe open once this process died
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
    try:
        venv.on_step = _sign_of_life(conn, venv)
        conn.send(("ready", (venv.observation_space, venv.action_space, picklable_metadata(venv.metadata))))
        models = _ModelCopy()
        while (payload := _next_share(conn)) is not None:
            try:
                venv.steps = 0  # this share's steps, sent with each sign of life
                policy, ids, kwargs = models.receive(conn, payload)
                result = rollout(venv, policy, len(ids), episode_ids=ids, progress=False,
                                 accept=functools.partial(_send_episode, conn, venv),
                                 on_start=lambda ks: conn.send(("start", (ks, venv.steps))), **kwargs)
                conn.send(("done", (result.dropped, result.errors, result.env_steps)))
            except Exception:
                conn.send(("error", traceback.format_exc(limit=8)))
    finally:
        venv.close()


# -- the policy's model: sent once, then only its weights -----------------------------------------------------------
# Pickling the cpu preset's agent and its policy took about 14 ms and unpickling it 11 ms, once per worker and call (an
# alignment update sends a new copy each time). A worker keeps the last model it was sent; the next call whose model
# has the same class, config, mode and tensor shapes sends only the weights, as one block of bytes, and the policy
# around it (its caches and random streams) pickled with the model left out.
def _model_of(policy) -> torch.nn.Module | None:
    model = getattr(policy, "model", None)
    return model if isinstance(model, torch.nn.Module) else None


def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """The model's parameters and buffers, each once, in a fixed order."""
    return [*model.parameters(), *model.buffers()]


def _model_key(model: torch.nn.Module) -> tuple:
    """What a model is apart from its weights (its modules' classes and modes, its config, its tensors' shapes): a
    worker's copy with the same key takes new weights as they are."""
    config = getattr(model, "config", None)
    return (tuple((type(m).__module__, type(m).__qualname__, m.training) for m in model.modules()),
            config.to_json_string() if hasattr(config, "to_json_string") else repr(config),
            getattr(config, "_attn_implementation", None),
            tuple((tuple(t.shape), str(t.dtype)) for t in _tensors(model)))


def _layout(tensors: list[torch.Tensor]) -> tuple[list[int], int]:
    """Each tensor's byte offset in one block (64-byte aligned), and the block's size."""
    offsets, size = [], 0
    for t in tensors:
        offsets.append(size)
        size += -(-t.numel() * t.element_size() // 64) * 64
    return offsets, size


def _in_block(block: torch.Tensor, t: torch.Tensor, offset: int) -> torch.Tensor:
    return block[offset:offset + t.numel() * t.element_size()].view(t.dtype).view(t.shape)


@dataclass
class _SentModel:
    """A policy's model as the workers are sent it in one call: its key and its weights in one block."""

    model: torch.nn.Module
    key: tuple
    block: torch.Tensor

    @classmethod
    def of(cls, model: torch.nn.Module) -> _SentModel:
        tensors = _tensors(model)
        offsets, size = _layout(tensors)
        block = torch.empty(size, dtype=torch.uint8)
        with torch.no_grad():
            for t, offset in zip(tensors, offsets):
                _in_block(block, t, offset).copy_(t.detach())
        return cls(model, _model_key(model), block)


class _PolicyPickler(pickle.Pickler):
    """Pickles a policy with its model left out (the worker puts its own copy back). Only `policy.model` itself is
    left out: a module the policy held apart would go whole at every call, as a copy of its own."""

    def __init__(self, file, model):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.model = model

    def persistent_id(self, obj):
        return "model" if obj is self.model else None


class _PolicyUnpickler(pickle.Unpickler):
    def __init__(self, file, model):
        super().__init__(file)
        self.model = model

    def persistent_load(self, pid):
        if pid != "model" or self.model is None:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return self.model


class _ModelCopy:
    """A worker's copy of the last model it was sent, and the block its weights arrive in."""

    def __init__(self):
        self.key, self.model, self.block, self.tensors, self.offsets = None, None, None, [], []

    def receive(self, conn, payload: bytes):
        """A share's (policy, ids, kwargs) from its message, and the weights that follow it when it has a model."""
        key, model_bytes, policy_bytes, ids, kwargs = pickle.loads(payload)
        if key is None:  # a policy without a model of its own: pickled whole
            return pickle.loads(policy_bytes), ids, kwargs
        if model_bytes is not None:
            self.model = None  # the old copy may go before the new one is made
            self.model = pickle.loads(model_bytes)
            self.tensors = _tensors(self.model)
            self.offsets, size = _layout(self.tensors)
            self.key, self.block = key, bytearray(size)
        if key != self.key:
            raise RuntimeError("a rollout worker was sent weights for a model it does not hold")
        if conn.recv_bytes_into(self.block) != len(self.block):
            raise RuntimeError("a rollout worker's weights did not arrive whole")
        block = torch.frombuffer(self.block, dtype=torch.uint8) if len(self.block) else torch.empty(0, dtype=torch.uint8)
        with torch.no_grad():  # copied in place: their versions change, so caches made from the old weights go
            for t, offset in zip(self.tensors, self.offsets):
                t.copy_(_in_block(block, t, offset))
        return _PolicyUnpickler(io.BytesIO(policy_bytes), self.model).load(), ids, kwargs


def _next_share(conn) -> bytes | None:
    try:
        payload = conn.recv_bytes()
    except EOFError:
        return None
    return None if payload == b"close" else payload


def _send_episode(conn, venv, episode) -> bool:
    """Every ended episode goes back at once, with the share's env steps so far; the worker keeps none."""
    conn.send(("episode", (episode, venv.steps)))
    return False


def _sign_of_life(conn, venv) -> Callable[[], None]:
    """At most once a second: "alive", with the env steps of the share so far."""
    last = [time.monotonic()]

    def beat() -> None:
        if time.monotonic() - last[0] >= 1.0:
            conn.send(("alive", venv.steps))
            last[0] = time.monotonic()

    return beat


def _kill_all(procs: list) -> None:
    for proc in procs:
        if proc is not None:
            kill_process_group(proc)


@dataclass
class _Share:
    """A worker's episodes in one rollout: which it was sent, started and ended, and when it was last heard from."""

    ids: list[int]
    steps: int = 0  # env steps as of its last message
    started: set = field(default_factory=set)
    ended: set = field(default_factory=set)
    heard: float = field(default_factory=time.monotonic)


class RolloutWorkers:
    """`workers` processes (default: one per CPU core, at most `num_envs`) sharing `num_envs` copies of `env_fn()`;
    pass it to the engine's `rollout` in place of a batched env. The policy needs `split(sizes)` and must pickle;
    the workers act on the CPU. `observation_space`, `action_space` and `metadata` are the env's."""

    def __init__(self, env_fn: Callable, num_envs: int, workers: int | None = None, timeout: float = 60.0,
                 start_timeout: float = 300.0):
        workers = workers or min(os.cpu_count() or 1, num_envs)
        if not 1 <= workers <= num_envs:
            raise ValueError(f"workers={workers}: choose between 1 and num_envs ({num_envs})")
        self.env_fn, self.num_envs, self.timeout, self.start_timeout = env_fn, num_envs, timeout, start_timeout
        self.sizes = split_sizes(num_envs, workers)
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(preload_modules(env_fn))
        self.procs: list = [None] * workers
        self.conns: list = [None] * workers
        self.model_keys: list = [None] * workers  # the model each worker holds (`_ModelCopy`)
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

    # -- the processes --------------------------------------------------------------------------------
    def _launch(self, w: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = start_game_process(self.ctx, _work, child, self.env_fn, self.sizes[w])
        child.close()
        self.procs[w], self.conns[w], self.model_keys[w] = proc, parent, None

    def _ready(self, w: int) -> None:
        conn, proc = self.conns[w], self.procs[w]
        if not mp.connection.wait([conn, proc.sentinel], timeout=self.start_timeout):
            raise RuntimeError(f"rollout worker {w} did not make its {self.sizes[w]} envs in {self.start_timeout:.0f} s")
        try:
            status, payload = conn.recv() if conn.poll(0) else ("exited", None)
        except (EOFError, OSError):
            status, payload = "exited", None
        if status == "exited":
            proc.join(timeout=5)
            raise RuntimeError(f"rollout worker {w} exited while making its envs (exit code {proc.exitcode})")
        if status != "ready":
            raise RuntimeError(f"rollout worker {w}: {payload}")
        self.observation_space, self.action_space, self.metadata = payload

    def _restart(self, w: int) -> None:
        self.conns[w].close()
        kill_process_group(self.procs[w])
        self.restarts += 1
        self._launch(w)
        self._ready(w)

    def _send(self, w: int, policy, ids: list[int], kwargs: dict, sent: _SentModel | None) -> _Share:
        """Worker w's share of a rollout; a worker that died since its last share is replaced first. A model the
        worker does not hold yet goes whole, then its weights (`sent`: the call's model, made once for all workers)."""
        if self.procs[w].exitcode is not None:
            self._restart(w)
        try:
            try:
                self._send_share(w, policy, ids, kwargs, sent)
            except OSError:  # it died just now
                self._restart(w)
                self._send_share(w, policy, ids, kwargs, sent)
        except BaseException:  # stopped between a share and its weights: the worker must not take the next call's
            kill_process_group(self.procs[w])  # share for them (the next call replaces it)
            raise
        return _Share(list(ids))

    def _send_share(self, w: int, policy, ids: list[int], kwargs: dict, sent: _SentModel | None) -> None:
        model = _model_of(policy)
        if model is None:
            self.conns[w].send_bytes(pickle.dumps((None, None, pickle.dumps(policy), ids, kwargs)))
            return
        if sent is None or sent.model is not model:  # a part with a model of its own
            sent = _SentModel.of(model)
        file = io.BytesIO()
        _PolicyPickler(file, model).dump(policy)
        model_bytes = None if self.model_keys[w] == sent.key else pickle.dumps(model)
        self.model_keys[w] = None  # until the worker has it
        self.conns[w].send_bytes(pickle.dumps((sent.key, model_bytes, file.getvalue(), ids, kwargs)))
        self.conns[w].send_bytes(sent.block.numpy())
        self.model_keys[w] = sent.key

    # -- a rollout ------------------------------------------------------------------------------------
    def rollout(self, policy, ids: list[int], *, seed, seeds, spawns, variants, options, keep_frames, writer, source,
                accept, progress, desc) -> RolloutResult:
        """The engine's `rollout` of the episodes `ids` (its arguments, its result), played by the workers; the engine
        calls it when given a `RolloutWorkers`."""
        if not hasattr(policy, "split"):
            raise ValueError(f"rollout workers need a policy with `split(sizes)`; {type(policy).__name__} has none")
        parts, k = policy.split(self.sizes), len(self.sizes)
        # the writer and accept run here; the workers keep frames as the one-process engine would
        kwargs = dict(seed=seed, seeds=seeds, spawns=spawns, variants=variants, options=options,
                      keep_frames=True if writer is not None else keep_frames)
        result, bar = RolloutResult(), tqdm(total=len(ids), desc=desc, unit="ep", disable=not progress)
        keep = functools.partial(keep_episode, result=result, keep_frames=keep_frames, writer=writer, source=source,
                                 accept=accept)
        t0, busy = time.monotonic(), {}
        model = _model_of(parts[0])  # the parts share the policy's model: its key and weights are made once
        sent = _SentModel.of(model) if model is not None else None
        try:
            for w in range(k):
                if ids[w::k]:
                    busy[w] = self._send(w, parts[w], ids[w::k], kwargs, sent)
            while busy:
                mp.connection.wait([*(self.conns[w] for w in busy), *(self.procs[w].sentinel for w in busy)], 1.0)
                for w, share in list(busy.items()):
                    busy[w] = self._check(w, share, result, bar, keep, (parts[w], kwargs, sent))
                busy = {w: share for w, share in busy.items() if share.ids}
                bar.set_postfix(dropped=result.dropped, refresh=False)
        except BaseException:  # the busy workers' later messages must not reach the next call: they start afresh
            for w in busy:
                kill_process_group(self.procs[w])
            raise
        finally:
            bar.close()
        result.seconds = time.monotonic() - t0
        return result

    def _check(self, w: int, share: _Share, result: RolloutResult, bar, keep, sending: tuple) -> _Share:
        """Take worker w's news; a worker that died or went silent is replaced. Returns its share now."""
        self._take(w, share, result, bar, keep)
        proc = self.procs[w]
        if not share.ids:
            return share
        if proc.exitcode is not None:
            self._take(w, share, result, bar, keep)  # what it sent just before it died
            why = f"exited (code {proc.exitcode})"
        elif time.monotonic() - share.heard > self.timeout:
            why = f"gave no sign of life for {self.timeout:.0f} s"
        else:
            return share
        return self._replace(w, share, why, result, bar, sending) if share.ids else share

    def _take(self, w: int, share: _Share, result: RolloutResult, bar, keep) -> None:
        """Everything worker w has sent so far: signs of life, episodes started and ended, its share's end."""
        conn = self.conns[w]
        while True:
            try:
                if not conn.poll(0):
                    return
                kind, data = conn.recv()
            except (EOFError, OSError):  # it died: its exit code says so
                return
            share.heard = time.monotonic()
            if kind == "alive":
                share.steps = data
            elif kind == "start":
                ks, share.steps = data
                share.started.update(ks)
            elif kind == "episode":
                episode, share.steps = data
                share.ended.add(episode.index)
                bar.update(1)
                keep(episode)
            elif kind == "done":
                dropped, errors, steps = data
                result.dropped += dropped
                result.errors += errors
                result.env_steps += steps
                bar.update(dropped)
                share.ids = []
            elif kind == "error":
                raise RuntimeError(f"rollout worker {w} failed:\n{data}")

    def _replace(self, w: int, share: _Share, why: str, result: RolloutResult, bar, sending: tuple) -> _Share:
        """A worker that died or hung: drop the episodes it was playing, start a fresh one on the rest of its share."""
        if not share.started:  # nothing started: its share cannot run, and a fresh worker would fail the same way
            raise RuntimeError(f"rollout worker {w} {why} before it started an episode of its share")
        lost = sorted(share.started - share.ended)
        result.dropped += len(lost)
        result.env_steps += share.steps  # up to its last message
        result.errors.append(f"rollout worker {w} {why}: the {len(lost)} episodes it was playing are dropped: {lost}")
        bar.update(len(lost))
        self._restart(w)
        rest = [i for i in share.ids if i not in share.started]
        policy, kwargs, sent = sending  # worker w's policy part, the rollout's arguments and model
        return self._send(w, policy, rest, kwargs, sent) if rest else _Share([])

    def close(self) -> None:
        for proc, conn in zip(self.procs, self.conns):
            if proc is None:
                continue
            try:
                conn.send_bytes(b"close")
                proc.join(timeout=10)
            except (OSError, ValueError):
                pass
            kill_process_group(proc)  # also any engine a worker that died had left
            conn.close()
        self._finalizer.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_rollout_workers(rollout_workers: int, setting: str = "rollout_workers") -> None:
    """Refuse a negative number of rollout workers, and any on a machine with a GPU (they act on the CPU). `setting`
    names the option in the error."""
    said = (lambda n: f"{setting} {n}") if setting.startswith("--") else (lambda n: f"{setting}={n}")  # a flag, a field
    if rollout_workers < 0:
        raise ValueError(f"{said(rollout_workers)}: must be >= 0 (0: the agent acts in this process)")
    if rollout_workers and torch.cuda.is_available():
        raise ValueError(f"{said(rollout_workers)}: rollout workers act on the CPU; with a GPU set {said(0)}, so that "
                         "the agent acts there for every game")


def rollout_envs(env_fn: Callable, num_envs: int, rollout_workers: int = 0):
    """What rollouts play on: `RolloutWorkers` (at most `num_envs` of them) when `rollout_workers` > 0, else a
    `BatchedEnv` (the agent acts in this process)."""
    from hf_agents.envs.vector import BatchedEnv

    check_rollout_workers(rollout_workers)
    if rollout_workers:
        return RolloutWorkers(env_fn, num_envs, min(rollout_workers, num_envs))
    return BatchedEnv(env_fn, num_envs)
