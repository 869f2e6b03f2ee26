"""Acting with the agent: one observation in, one action out per env, with the KV cache.

The cache is batched across envs (`WindowCache`): each env's tokens sit in the slots of their positions in its own
window, so envs with different episode starts (per-env reset) share it without padding or compaction. Learnt
absolute positions cap an env's window at H steps: when it is full, that env alone keeps its last
`config.keep_steps` steps, re-encoded from their stored embeddings (the CNN is not re-run), so every env acts on
exactly the context `AgentModel.context_start` gives, whatever the other envs do. Training re-scores a trajectory
with `AgentModel.sliding_forward` and gets the same log-probs.
"""

from __future__ import annotations

import numpy as np
import torch

from hf_agents.actions import NUM_COMPONENTS
from hf_agents.frames import to_model
from hf_agents.models.modeling_agent import AgentModel, get_action_and_logprob
from hf_agents.seeding import episode_stream


class AgentPolicy:
    def __init__(self, model: AgentModel, num_envs: int, temperature: float = 1.0, greedy: bool = False,
                 seed: int | None = None, threads: int | None = None):
        self.model = model.eval()
        self.num_envs, self.temperature, self.greedy, self.seed = num_envs, temperature, greedy, seed
        self.checkpoint = str(getattr(model, "name_or_path", "") or "")  # recorded with rollouts
        self.H, self.keep_steps = model.config.context_length, model.config.keep_steps
        self.device = next(model.parameters()).device
        # CPU threads while acting: one step at batch <= 64 is many small ops, and one thread was faster than two
        # in rollouts on 2 cores (the benchmark's rollout section). None: torch's setting.
        self.threads = threads if threads is not None or self.device.type != "cpu" else 1
        # One random stream per env, re-seeded at each reset from (seed, the episode's stream from the rollout
        # engine): an episode's actions do not depend on which env plays it or on how many envs there are.
        self.stream_seed = seed if seed is not None else int(torch.randint(2**62, (1,)))  # seed=None: random
        self.env_generators = [torch.Generator().manual_seed(episode_stream(self.stream_seed, i))
                               for i in range(num_envs)]  # until the first reset with seeds
        N, D = num_envs, model.config.hidden_size
        self.rows = torch.arange(N, device=self.device)
        # Per env, the steps of its current window: observation embeddings and the actions taken.
        self.obs_buf = torch.zeros(N, self.H, D, device=self.device, dtype=model.dtype)
        self.act_buf = torch.zeros(N, self.H, NUM_COMPONENTS, device=self.device, dtype=torch.long)
        self.features: np.ndarray | None = None  # (N, D) float32: the last observations' frame embeddings, which
        # training reuses instead of encoding the frames again (`TrainablePolicy.frozen_encoder`)
        self.reset()

    @property
    def metadata(self) -> dict:
        """What a rollout dataset records so that training can trust its log-probs."""
        return {"checkpoint": self.checkpoint, "temperature": self.temperature,
                "greedy": self.greedy, "keep_steps": self.keep_steps, "context_length": self.H, "seed": self.seed}

    # -- state ---------------------------------------------------------------------------------
    def reset(self, envs=None, infos=None, seeds=None) -> None:
        """Start new episodes (empty context) for all envs, or for the given env indices / boolean mask.

        `infos` is accepted for the rollout engine's policy interface and ignored: the agent sees pixels only.
        `seeds`: the episodes' stream seeds; each env's sampling stream restarts from (policy seed, episode seed).
        """
        if envs is None:
            self.n = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)  # steps in the window
            self.action_cached = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            self.cache = self.model.window_cache(self.num_envs)
            return
        envs = np.flatnonzero(envs) if np.asarray(envs).dtype == bool else np.asarray(envs, dtype=np.int64)
        for j, i in enumerate(envs if seeds is not None else ()):
            self.env_generators[i].manual_seed(episode_stream(self.stream_seed, int(seeds[j])))
        idx = torch.as_tensor(envs, device=self.device, dtype=torch.long)
        self.n[idx] = 0
        self.action_cached[idx] = False  # True: the last action is already in the cache (after a slide)

    def keep(self, rows) -> None:
        """Forget every env but these rows, in this order (the rollout engine's call when envs have no episode left):
        acting then costs only the envs still playing. Each kept env's context, cache and random stream go on."""
        rows = list(rows)
        idx = torch.as_tensor(rows, device=self.device, dtype=torch.long)
        self.num_envs = len(rows)
        self.rows = torch.arange(self.num_envs, device=self.device)
        self.env_generators = [self.env_generators[i] for i in rows]
        self.obs_buf, self.act_buf = self.obs_buf[idx], self.act_buf[idx]
        self.n, self.action_cached, self.cache = self.n[idx], self.action_cached[idx], self.cache.select(idx)

    def split(self, sizes: list[int]) -> list[AgentPolicy]:
        """Policies for consecutive groups of this policy's envs (same model, sampling and seed), each with its own
        cache: the rollout engine lets one group act while the others' games step. An episode's actions depend only
        on its own stream, so they are the same in any group."""
        if sum(sizes) != self.num_envs:
            raise ValueError(f"split sizes {sizes} must add up to num_envs={self.num_envs}")
        return [type(self)(self.model, n, temperature=self.temperature, greedy=self.greedy, seed=self.stream_seed,
                           threads=self.threads) for n in sizes]

    def context_lengths(self) -> list[int]:
        """Steps of context (including the current observation) each env acted on last."""
        return self.n.tolist()

    # -- acting --------------------------------------------------------------------------------
    def act(self, frames, infos=None) -> tuple[np.ndarray, np.ndarray]:
        """frames: (N, H, W, 3) uint8 observations. Returns action ids (N, 16) and their log-probs (N,)."""
        before = torch.get_num_threads()
        if self.threads is not None and self.threads != before:
            torch.set_num_threads(self.threads)
        try:
            return self._act(frames)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    @torch.no_grad()
    def _act(self, frames) -> tuple[np.ndarray, np.ndarray]:
        frames = to_model(frames, self.device)
        if frames.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} observations, got {frames.shape[0]}")
        full = self.n >= self.H
        if full.any():
            self._slide(full.nonzero()[:, 0])
        obs = self.model.embed_frames(frames)  # (N, D)
        n = self.n
        prev = self.act_buf[self.rows, (n - 1).clamp(min=0)]
        pending = (n > 0) & ~self.action_cached
        logits, _ = self.model.step(obs, prev, n, pending, self.cache)
        self.last_logits = logits.float()
        uniforms = None if self.greedy else torch.stack(
            [torch.rand(NUM_COMPONENTS, generator=g) for g in self.env_generators])
        sample = get_action_and_logprob(self.last_logits, temperature=self.temperature, greedy=self.greedy,
                                        uniforms=uniforms)
        self.obs_buf[self.rows, n] = obs
        self.features = obs.float().cpu().numpy()
        self.act_buf[self.rows, n] = sample.actions
        self.n = n + 1
        self.action_cached[:] = False
        return sample.actions.cpu().numpy(), sample.logprob.cpu().numpy()

    def _slide(self, rows: torch.Tensor) -> None:
        """Envs whose window is full keep their last `keep_steps` steps, re-encoded into their first cache slots."""
        H, keep = self.H, self.keep_steps
        self.obs_buf[rows, :keep] = self.obs_buf[rows, H - keep:H]
        self.act_buf[rows, :keep] = self.act_buf[rows, H - keep:H]
        self.n[rows] = keep
        self.model.encode_window(self.obs_buf[rows, :keep], self.act_buf[rows, :keep], rows, self.cache)
        self.action_cached[rows] = True
