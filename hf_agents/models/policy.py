"""Acting with the agent: one observation in, one action out per env, with the KV cache.

The cache is batched across envs; each env has its own episode start (per-env reset), kept apart by
an attention mask over cache slots and per-env position ids. Learnt absolute positions cap the window
at H steps, so when an env's window is full the cache is rebuilt from the stored per-step embeddings
of the last H/2 steps of each env (the CNN is not re-run): every env then acts with H/2..H-1 steps
of context, and the rebuild happens at most once every H/2 steps.
"""

from __future__ import annotations

import numpy as np
import torch

from hf_agents.models.modeling_agent import AgentModel, split_logits


class AgentPolicy:
    def __init__(self, model: AgentModel, num_envs: int, temperature: float = 1.0, greedy: bool = False,
                 seed: int | None = None, keep_steps: int | None = None):
        self.model = model.eval()
        self.num_envs, self.temperature, self.greedy = num_envs, temperature, greedy
        self.H = model.config.context_length
        self.keep_steps = keep_steps or max(self.H // 2, 1)
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self, envs=None, infos=None) -> None:
        """Start new episodes (empty context) for all envs, or for the given env indices / boolean mask.

        `infos` is accepted for the rollout engine's policy interface and ignored: the agent sees pixels only.
        """
        if envs is None:
            self.obs_history = [[] for _ in range(self.num_envs)]  # per env: obs embeddings in the window
            self.act_history = [[] for _ in range(self.num_envs)]  # per env: actions taken in the window
            self.action_cached = [False] * self.num_envs  # last action already in the cache (after a rebuild)
            self.cache = None
            self.slot_mask = torch.zeros(self.num_envs, 0, dtype=torch.long, device=self.device)
            return
        envs = np.flatnonzero(envs) if np.asarray(envs).dtype == bool else np.asarray(envs, dtype=np.int64)
        for i in envs:
            self.obs_history[i], self.act_history[i] = [], []
            self.action_cached[i] = False
            self.slot_mask[i] = 0  # forget its old cache slots

    def context_lengths(self) -> list[int]:
        """Steps of context (including the current observation) each env acted on last."""
        return [len(h) for h in self.obs_history]

    # -- acting --------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, frames, infos=None) -> tuple[np.ndarray, np.ndarray]:
        """frames: (N, H, W, 3) uint8 observations (or (N, 3, H, W)). Returns action ids (N, 16), log-probs (N,)."""
        frames = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames, device=self.device)
        if frames.ndim == 4 and frames.shape[-1] == 3 and frames.shape[1] != 3:
            frames = frames.permute(0, 3, 1, 2)
        if frames.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} observations, got {frames.shape[0]}")
        if max(len(h) for h in self.obs_history) >= self.H or self.slot_mask.shape[1] >= 4 * self.H:
            self._rebuild()
        obs = self.model.embed_frames(frames)  # (N, D)
        pending = [len(a) > 0 and not c for a, c in zip(self.act_history, self.action_cached)]
        n = torch.tensor([len(h) for h in self.obs_history], device=self.device)
        prev = torch.stack([a[-1] if p else torch.full((16,), 0, device=self.device, dtype=torch.long)
                            for a, p in zip(self.act_history, pending)])
        has_prev = torch.tensor(pending, device=self.device, dtype=torch.long)
        # Two new tokens per env: [previous action (masked out at an episode start), observation].
        tokens = torch.stack([self.model.embed_actions(prev), obs], dim=1)
        positions = torch.stack([(2 * n - 1).clamp(min=0), 2 * n], dim=1)
        self.slot_mask = torch.cat([self.slot_mask, torch.stack([has_prev, torch.ones_like(has_prev)], 1)], 1)
        out = self.model.backbone(inputs_embeds=tokens, past_key_values=self.cache, attention_mask=self.slot_mask,
                                  position_ids=positions, use_cache=True)
        self.cache = out.past_key_values
        self.last_logits = self.model.action_logits(out.last_hidden_state[:, -1]).float()
        actions, logprobs = self._sample(self.last_logits)
        self.action_cached = [False] * self.num_envs
        for i in range(self.num_envs):
            self.obs_history[i].append(obs[i])
            self.act_history[i].append(actions[i])
        return actions.cpu().numpy(), logprobs.cpu().numpy()

    def _sample(self, logits: torch.Tensor):
        ids, logprob = [], torch.zeros(logits.shape[0], device=logits.device)
        for lg in split_logits(logits):
            logp = torch.log_softmax(lg / max(self.temperature, 1e-6), -1)
            if self.greedy:
                choice = lg.argmax(-1)
            else:
                choice = torch.multinomial(logp.exp(), 1, generator=self.generator)[:, 0]
            ids.append(choice)
            logprob += logp.gather(-1, choice[:, None])[:, 0]
        return torch.stack(ids, -1), logprob

    def _rebuild(self) -> None:
        """Re-encode the last `keep_steps` complete steps of each env into a fresh, left-padded cache."""
        keep = [min(len(a), self.keep_steps) for a in self.act_history]
        K = max(keep)
        self.obs_history = [h[len(h) - k:] if k else [] for h, k in zip(self.obs_history, keep)]
        self.act_history = [h[len(h) - k:] if k else [] for h, k in zip(self.act_history, keep)]
        if K == 0:
            self.cache, self.slot_mask = None, self.slot_mask[:, :0]
            return
        D = self.model.config.hidden_size
        tokens = torch.zeros(self.num_envs, 2 * K, D, device=self.device)
        mask = torch.zeros(self.num_envs, 2 * K, dtype=torch.long, device=self.device)
        positions = torch.zeros(self.num_envs, 2 * K, dtype=torch.long, device=self.device)
        for i, k in enumerate(keep):
            if k == 0:
                continue
            obs = torch.stack(self.obs_history[i])
            act = self.model.embed_actions(torch.stack(self.act_history[i]))
            tokens[i, 2 * (K - k):] = torch.stack([obs, act], 1).reshape(2 * k, D)
            mask[i, 2 * (K - k):] = 1
            positions[i, 2 * (K - k):] = torch.arange(2 * k, device=self.device)
        out = self.model.backbone(inputs_embeds=tokens.to(self.model.dtype), attention_mask=mask,
                                  position_ids=positions, use_cache=True)
        self.cache, self.slot_mask = out.past_key_values, mask
        self.action_cached = [k > 0 for k in keep]
