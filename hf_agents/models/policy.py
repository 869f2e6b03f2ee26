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

from hf_agents.actions import NUM_COMPONENTS
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
        N, D = num_envs, model.config.hidden_size
        self.rows = torch.arange(N, device=self.device)
        # Per env, the steps of its current window: observation embeddings and the actions taken.
        self.obs_buf = torch.zeros(N, self.H, D, device=self.device, dtype=model.dtype)
        self.act_buf = torch.zeros(N, self.H, NUM_COMPONENTS, device=self.device, dtype=torch.long)
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self, envs=None, infos=None) -> None:
        """Start new episodes (empty context) for all envs, or for the given env indices / boolean mask.

        `infos` is accepted for the rollout engine's policy interface and ignored: the agent sees pixels only.
        """
        if envs is None:
            self.n = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)  # steps in the window
            self.action_cached = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            self.cache = None
            self.slot_mask = torch.zeros(self.num_envs, 0, dtype=torch.long, device=self.device)
            return
        envs = np.flatnonzero(envs) if np.asarray(envs).dtype == bool else np.asarray(envs, dtype=np.int64)
        idx = torch.as_tensor(envs, device=self.device, dtype=torch.long)
        self.n[idx] = 0
        self.action_cached[idx] = False  # True: the last action is already in the cache (after a rebuild)
        self.slot_mask[idx] = 0  # forget its old cache slots

    def context_lengths(self) -> list[int]:
        """Steps of context (including the current observation) each env acted on last."""
        return self.n.tolist()

    # -- acting --------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, frames, infos=None) -> tuple[np.ndarray, np.ndarray]:
        """frames: (N, H, W, 3) uint8 observations (or (N, 3, H, W)). Returns action ids (N, 16), log-probs (N,)."""
        frames = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames, device=self.device)
        if frames.ndim == 4 and frames.shape[-1] == 3 and frames.shape[1] != 3:
            frames = frames.permute(0, 3, 1, 2)
        if frames.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} observations, got {frames.shape[0]}")
        if int(self.n.max()) >= self.H or self.slot_mask.shape[1] >= 4 * self.H:
            self._rebuild()
        obs = self.model.embed_frames(frames)  # (N, D)
        n = self.n
        pending = (n > 0) & ~self.action_cached
        prev = self.act_buf[self.rows, (n - 1).clamp(min=0)]
        # Two new tokens per env: [previous action (masked out at an episode start), observation].
        tokens = torch.stack([self.model.embed_actions(prev), obs], dim=1)
        positions = torch.stack([(2 * n - 1).clamp(min=0), 2 * n], dim=1)
        self.slot_mask = torch.cat([self.slot_mask, torch.stack([pending.long(), torch.ones_like(n)], 1)], 1)
        out = self.model.backbone(inputs_embeds=tokens, past_key_values=self.cache, attention_mask=self.slot_mask,
                                  position_ids=positions, use_cache=True)
        self.cache = out.past_key_values
        self.last_logits = self.model.action_logits(out.last_hidden_state[:, -1]).float()
        actions, logprobs = self._sample(self.last_logits)
        self.obs_buf[self.rows, n] = obs
        self.act_buf[self.rows, n] = actions
        self.n = n + 1
        self.action_cached[:] = False
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
        keep = self.n.clamp(max=self.keep_steps)
        K = int(keep.max())
        # Move each env's last `keep` steps to the front of its buffers.
        src = (self.n - keep)[:, None] + torch.arange(self.H, device=self.device)[None]
        src = src.clamp(max=self.H - 1)
        self.obs_buf = self.obs_buf.gather(1, src[..., None].expand_as(self.obs_buf)).contiguous()
        self.act_buf = self.act_buf.gather(1, src[..., None].expand_as(self.act_buf)).contiguous()
        self.n = keep
        if K == 0:
            self.cache, self.slot_mask = None, self.slot_mask[:, :0]
            return
        # Left-pad to K steps: token j of env i is its step j - (K - keep_i), or padding.
        step = torch.arange(K, device=self.device)[None] - (K - keep)[:, None]  # (N, K)
        valid = step >= 0
        step = step.clamp(min=0)
        obs = self.obs_buf.gather(1, step[..., None].expand(-1, -1, self.obs_buf.shape[-1]))
        act = self.model.embed_actions(self.act_buf.gather(1, step[..., None].expand(-1, -1, NUM_COMPONENTS)))
        tokens = torch.stack([obs, act], 2).reshape(self.num_envs, 2 * K, -1)
        mask = valid.repeat_interleave(2, dim=1).long()
        positions = (torch.stack([2 * step, 2 * step + 1], 2).reshape(self.num_envs, 2 * K)) * mask
        out = self.model.backbone(inputs_embeds=tokens, attention_mask=mask, position_ids=positions, use_cache=True)
        self.cache, self.slot_mask = out.past_key_values, mask
        self.action_cached = keep > 0
