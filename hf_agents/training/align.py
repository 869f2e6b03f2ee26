"""Stage 5b (paper 3.6, Appendix A, C.4): online alignment with REINFORCE, RLOO or online DPO.

Each update rolls out a batch of episodes with the current policy (the one rollout engine), scores each
whole trajectory (reward model, oracle or game reward: `training/rewards.py`) and applies REINFORCE with
that score as the undiscounted return of every step. Options: RLOO's leave-one-out baseline over k
episodes started from the same reset seed (same spawn); the KL penalty to the reference policy of
Appendix A (beta, folded into the return: R - beta * sum_t log pi/pi_ref; pi_ref is the policy at the
start of the run, `TrainablePolicy`); an entropy bonus; training the head (paper), LoRA adapters or
everything. Online (iterative) DPO takes the same rollouts: within each spawn group the episode the reward scores
highest is chosen over the one it scores lowest, and the update is DPO's sigmoid loss on those pairs against the
reference policy. Episodes whose env failed are dropped (paper C.4). A killed run
resumes exactly: rollouts of update u depend only on (seed, u) and the weights. Under `accelerate launch` each
rank plays whole spawn groups of every update with its own game processes and the ranks sum their gradients, so
the run does not depend on the number of ranks beyond float order; rank 0 writes.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hf_agents.data.schema import NO_OUTCOME
from hf_agents.files import atomic_dir, atomic_write_json, saving, write_train_results
from hf_agents.models import AgentModel, AgentPolicy, get_action_and_logprob, load_checked
from hf_agents.models.adapters import merged_for_acting
from hf_agents.processes import launch_state
from hf_agents.training.common import (
    PolicyArguments,
    RolloutArguments,
    StageArguments,
    check_output_dir,
    checkpoints,
    clear_checkpoints,
)
from hf_agents.training.dpo import pair_margins
from hf_agents.training.rewards import RewardFunction, RewardSourceArguments, pad_features, stack_episodes

ALGORITHMS = ("reinforce", "rloo", "online_dpo")


@dataclass
class AlignConfig(StageArguments, PolicyArguments, RolloutArguments, RewardSourceArguments):
    r"""Online alignment. Paper values (C.4): REINFORCE, 16 episodes an update, 600 updates, lr 1e-4, head only."""

    output_dir: str = field(default="", metadata={"help": "Where the aligned agent (or adapter), logs and plots go."})
    algorithm: str = field(default="reinforce", metadata={"help": "reinforce (paper), rloo (leave-one-out "
                                                          "baseline over `rloo_k` episodes of one spawn) or online_dpo "
                                                          "(DPO on the best and worst episode of each spawn group)."})
    rloo_k: int = field(default=4, metadata={"help": "rloo and online_dpo: episodes per group sharing a reset seed "
                                             "(spawn)."})
    dpo_beta: float = field(default=0.1, metadata={"help": "online_dpo: DPO's beta (the KL strength implied by the "
                                                   "loss)."})
    kl_coef: float = field(default=0.0, metadata={"help": "beta of Appendix A's KL penalty to the reference policy "
                                                  "(paper's experiments: 0, head only)."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Entropy bonus per step."})
    episodes_per_update: int = field(default=16, metadata={"help": "Episodes rolled out per update (paper: 16)."})
    num_updates: int = field(default=600, metadata={"help": "Parameter updates, each on one batch of fresh episodes "
                                                    "(paper: 600)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate (paper: 1e-4)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping."})
    micro_batch_size: int = field(default=16, metadata={"help": "Episodes per backward pass (memory)."})
    keep_best: bool = field(default=False, metadata={"help": "Save the policy that played the best `best_window` "
                                                     "updates by mean reward, not the last (paper: the last)."})
    best_window: int = field(default=10, metadata={"help": "keep_best: updates averaged per window."})
    save_steps: int = field(default=25, metadata={"help": "Checkpoint every N updates (resume=true goes on from the "
                                                  "last one, to the same weights)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    seed: int = field(default=0, metadata={"help": "Seeds rollouts (env and sampling) and initialisation."})

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got '{self.algorithm}'")
        if self.algorithm != "reinforce" and (self.rloo_k < 2 or self.episodes_per_update % self.rloo_k):
            raise ValueError(f"{self.algorithm} needs rloo_k >= 2 dividing episodes_per_update ({self.episodes_per_update}), "
                             f"got rloo_k={self.rloo_k}")
        super().__post_init__()


def advantages(rewards: np.ndarray, algorithm: str, groups: np.ndarray) -> np.ndarray:
    """REINFORCE: the return itself. RLOO: minus the mean of the other episodes of the same group."""
    if algorithm == "reinforce":
        return rewards.astype(np.float32)
    out = np.zeros_like(rewards, dtype=np.float32)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:  # the others were dropped: no baseline to leave one out of
            out[idx] = 0.0
            continue
        total = rewards[idx].sum()
        out[idx] = rewards[idx] - (total - rewards[idx]) / (len(idx) - 1)
    return out


def preference_pairs(rewards: np.ndarray, groups: np.ndarray) -> list[tuple[int, int]]:
    """Online DPO's pairs: in each spawn group, (position of the best episode, position of the worst), where the
    two rewards differ."""
    pairs = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        best, worst = idx[np.argmax(rewards[idx])], idx[np.argmin(rewards[idx])]
        if rewards[best] > rewards[worst]:
            pairs.append((int(best), int(worst)))
    return pairs


class AlignTrainer:
    """Rollout -> score -> REINFORCE/RLOO update, `num_updates` times, with checkpoints and exact resume."""

    def __init__(self, config: AlignConfig, model: AgentModel | None = None, env_fn=None, device=None):
        self.config, self.env_fn, self.ranks = config, env_fn, Ranks()
        self.device = torch.device(device or self.ranks.device)
        base = model if model is not None else load_checked(AgentModel, config.agent, "agent")
        self.game = config.game(base.config, config.agent) if env_fn is None else None
        self.frame_size = base.config.image_size
        self.outcomes = self.game.outcomes if self.game else _declared_outcomes(env_fn)
        self.reward_fn = RewardFunction(config.reward_source, config.reward_model, config.target, self.outcomes,
                                        config.max_episode_steps, self.frame_size, device=self.device,
                                        game=self.game.id if self.game else None)
        torch.manual_seed(config.seed)
        reference = bool(config.kl_coef) or config.algorithm == "online_dpo"
        self.policy = config.make_policy(base.to(self.device), reference=reference)
        if self.policy.frozen_encoder:  # an agent-encoder reward model on the same frozen encoder: no second encoding
            self.reward_fn.use_acting_embeddings(self.policy.agent)
        self.model, self.params = self.policy.model, self.policy.parameters()
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate)
        self.update, self.log_history = 0, []
        self.best: dict | None = None  # keep_best: {"update", "score", "state"} of the best window so far

    # -- one update ------------------------------------------------------------------------------
    def rollout(self, venv, update: int):
        """The batch of update `update`: env seeds and policy sampling depend only on (seed, update)."""
        from hf_agents.rollout.engine import rollout

        c = self.config
        k = 1 if c.algorithm == "reinforce" else c.rloo_k
        base_seed = (c.seed * 1_000_003 + update) * 1000
        groups = np.repeat(np.arange(c.episodes_per_update // k), k)
        seeds = [base_seed + int(g) for g in groups]  # one reset seed (so one spawn) per RLOO group
        mine = self.ranks.share(groups)  # whole groups per rank: the leave-one-out baseline stays local
        # LoRA merged into a copy of the weights: the same policy, without the adapter's extra matmuls at every step
        agent = merged_for_acting(self.policy.model)
        policy = AgentPolicy(agent, venv.num_envs, temperature=c.temperature, seed=base_seed)
        result = rollout(venv, policy, len(mine), seeds=seeds, episode_ids=mine, options=self.reset_options(update),
                         progress=False, keep_frames=True)
        result.episodes.sort(key=lambda e: e.index)  # completion order depends on timing; the update must not
        return result, groups[[e.index for e in result.episodes]]

    def reset_options(self, update: int) -> list[dict] | None:
        """Per-episode reset options of an update (none by default; tests inject faults here)."""
        return None

    def loss(self, episodes, adv: np.ndarray, n: int):
        """Backward of -mean_i adv_i * sum_t log pi(a_t) (and the entropy bonus) over micro-batches; `n` is the
        number of episodes on every rank (the mean is over all of them).

        Returns the summed entropy, the steps and the largest gap between a recomputed and a recorded log-prob
        (0 up to float noise: the rollout's policy is the one being trained)."""
        c = self.config
        entropy_sum, steps, drift = 0.0, 0, 0.0
        for start in range(0, len(episodes), c.micro_batch_size):
            chunk = episodes[start:start + c.micro_batch_size]
            frames, actions, mask, embeddings = self.batch(chunk)
            logits, _ = self.policy.logits(frames, actions, lengths=mask.sum(1), embeddings=embeddings)
            scored = get_action_and_logprob(logits, actions, temperature=c.temperature)
            m = mask.float()
            logp = (scored.logprob * m).sum(1)
            a = torch.as_tensor(adv[start:start + len(chunk)], device=self.device)
            ent = (scored.entropy * m).sum()
            loss = -(a * logp).sum() / n - c.entropy_coef * ent / max(int(mask.sum()), 1) * len(chunk) / n
            loss.backward()
            entropy_sum += float(ent.detach())
            steps += int(mask.sum())
            recorded = torch.as_tensor(stack_logprobs(chunk), device=self.device)
            drift = max(drift, float(((scored.logprob.detach() - recorded).abs() * m).max()))
        return entropy_sum, steps, drift

    def dpo_loss(self, episodes, pairs: list[tuple[int, int]], n: int) -> list[float]:
        """Backward of DPO's loss -mean log sigmoid(beta * [(log pi - log pi_ref)(chosen) - (same)(rejected)]) over
        (chosen, rejected) episode positions (`n`: the pairs on every rank); returns this rank's margins."""
        c = self.config
        margins = [torch.zeros(0)]
        per_chunk = max(c.micro_batch_size // 2, 1)
        for start in range(0, len(pairs), per_chunk):
            chunk = pairs[start:start + per_chunk]
            frames, actions, mask, embeddings = self.batch([episodes[i] for i, _ in chunk] +
                                                           [episodes[j] for _, j in chunk])
            margin = pair_margins(self.policy, frames, actions, mask, c.dpo_beta, temperature=c.temperature,
                                  embeddings=embeddings)
            (-torch.nn.functional.logsigmoid(margin).sum() / n).backward()
            margins.append(margin.detach().cpu())
        return torch.cat(margins).tolist()

    def batch(self, episodes):
        """frames, actions, mask (`stack_episodes`) and, where the policy's frame encoder is frozen, the frame
        embeddings recorded while acting (None otherwise): the update then does not encode the frames again."""
        frames, actions, mask = stack_episodes(episodes, self.device)
        embeddings = None
        if self.policy.frozen_encoder and all(e.features is not None for e in episodes):
            embeddings = torch.as_tensor(pad_features(episodes), device=self.device, dtype=self.policy.agent.dtype)
        return frames, actions, mask, embeddings

    @torch.no_grad()
    def kl(self, episodes) -> np.ndarray:
        """sum_t log pi(a_t) - log pi_ref(a_t) per episode (pi's log-probs as recorded by the rollout)."""
        out = []
        for start in range(0, len(episodes), self.config.micro_batch_size):
            chunk = episodes[start:start + self.config.micro_batch_size]
            frames, actions, mask, embeddings = self.batch(chunk)
            ref = get_action_and_logprob(self.policy.reference_logits(frames, actions, lengths=mask.sum(1),
                                                                      embeddings=embeddings),
                                         actions, temperature=self.config.temperature).logprob
            recorded = torch.as_tensor(stack_logprobs(chunk), device=self.device)
            out.append(((recorded - ref) * mask).sum(1).cpu().numpy())
        return np.concatenate(out)

    def step(self, venv) -> dict:
        """One update: roll out, score, learn. Returns the update's log."""
        t0 = time.monotonic()
        result, groups = self.rollout(venv, self.update)
        t1 = time.monotonic()
        log = self.learn(result.episodes, groups)
        log.update(dropped=int(self.ranks.total(result.dropped)), seconds=time.monotonic() - t0,
                   seconds_rollout=t1 - t0)
        return log

    def learn(self, episodes, groups) -> dict:
        """The REINFORCE/RLOO/online-DPO update on a batch of finished episodes (dropped ones already left out);
        on several ranks each holds its share, and the gradients of all of them are summed before the step."""
        c, ranks = self.config, self.ranks
        t0 = time.monotonic()
        rewards = self.reward_fn(episodes)
        t1 = time.monotonic()
        kl = self.kl(episodes) if c.kl_coef and episodes else np.zeros(len(episodes), np.float32)
        t2 = time.monotonic()
        before = {k: v.clone() for k, v in self.trainable_state().items()} if c.keep_best else None  # played it
        self.optimizer.zero_grad(set_to_none=True)
        n = int(ranks.total(len(episodes)))
        entropy, steps, drift, grad_norm, margins = 0.0, 0, 0.0, 0.0, None
        if c.algorithm == "online_dpo":
            pairs = preference_pairs(rewards - c.kl_coef * kl, groups)
            n_pairs = int(ranks.total(len(pairs)))
            if n_pairs:
                margins = ranks.gather(self.dpo_loss(episodes, pairs, n_pairs))
                grad_norm = self.apply_gradients()
        elif n:  # every episode of the batch failed: nothing to learn from, the update is skipped
            adv = advantages(rewards - c.kl_coef * kl, c.algorithm, groups)
            entropy, steps, drift = self.loss(episodes, adv, n)
            grad_norm = self.apply_gradients()
        self.update += 1
        everyone = ranks.gather([(float(r), float(k), e.outcome, e.length) for r, k, e in zip(rewards, kl, episodes)])
        self.keep_if_best([r for r, *_ in everyone], before=before)
        log = self.update_log(everyone, ranks.total(entropy) / max(ranks.total(steps), 1), ranks.largest(drift),
                              grad_norm, margins)
        log.update(seconds_reward=t1 - t0, seconds_reference=t2 - t1, seconds_learn=time.monotonic() - t2)
        return log

    def keep_if_best(self, rewards: list[float], before: dict | None) -> None:
        """keep_best: when the mean reward of the last `best_window` updates (this one's included) is the best yet,
        keep `before`, the policy that played this update's batch (the policy after `update - 1` updates)."""
        if before is None:
            return
        means = [h["reward_mean"] for h in self.log_history]
        window = means[max(len(means) - self.config.best_window + 1, 0):] + [float(np.mean(rewards)) if rewards else 0.0]
        if len(window) < min(self.config.best_window, self.config.num_updates):
            return
        score = float(np.mean(window))
        if self.best is None or score > self.best["score"]:
            self.best = {"update": self.update - 1, "score": score, "state": before}  # after update - 1 updates

    def apply_gradients(self) -> float:
        """Sum the ranks' gradients, clip, take the optimiser step; the gradient norm."""
        self.ranks.sum_gradients(self.params)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm))
        self.optimizer.step()
        return grad_norm

    def update_log(self, everyone: list[tuple], entropy: float, drift: float, grad_norm: float, margins) -> dict:
        """The update's log from every rank's (reward, kl, outcome, length) per episode."""
        rewards, kl, outcomes, lengths = zip(*everyone) if everyone else ((), (), (), ())
        log = {"update": self.update, "episodes": len(outcomes), "reward_mean": float(np.mean(rewards)) if rewards
               else 0.0, "kl": float(np.mean(kl)) if kl else 0.0, "entropy": entropy, "grad_norm": grad_norm,
               "logprob_drift": drift, "mean_length": float(np.mean(lengths)) if lengths else 0.0}
        if margins is not None:
            log.update(dpo_pairs=len(margins), dpo_margin=float(np.mean(margins)),
                       dpo_accuracy=float(np.mean([m > 0 for m in margins])))
        for o in sorted(set(outcomes) | set(self.outcomes) | {NO_OUTCOME}):
            log[f"success_{o}"] = outcomes.count(o) / max(len(outcomes), 1)
        return log

    # -- the run ---------------------------------------------------------------------------------
    def train(self) -> dict:
        c = self.config
        writer = _summary_writer(c) if self.ranks.main else None
        env_fn = self.env_fn or self.game.env_fn(max_steps=c.max_episode_steps)
        bar = tqdm(total=c.num_updates, initial=self.update, desc="align", unit="update", disable=not self.ranks.main)
        share = -(-c.episodes_per_update // self.ranks.size)
        with c.envs(env_fn, min(c.num_envs, share)) as venv:
            while self.update < c.num_updates:
                log = self.step(venv)
                self.log_history.append(log)
                if writer is not None:
                    for key, value in log.items():
                        if key != "update":
                            writer.add_scalar(f"align/{key}", value, self.update)
                target = f"success_{c.target}" if c.target else None
                bar.set_postfix(reward=f"{log['reward_mean']:.2f}", **({c.target: f"{log[target]:.2f}"}
                                                                        if target in log else {}))
                bar.update(1)
                if self.update % c.save_steps == 0 or self.update == c.num_updates:
                    self.save_checkpoint()
        bar.close()
        if writer is not None:
            writer.close()
        return self.finish()

    def finish(self) -> dict:
        c, out = self.config, Path(self.config.output_dir)
        if self.best is not None:  # keep_best: the policy of the best window, not the last
            self.load_trainable(self.best["state"])
        if self.ranks.main:
            self.policy.save(out)
        last = self.log_history[-min(len(self.log_history), 20):]
        metrics = {"updates": self.update, "episodes": sum(h["episodes"] for h in self.log_history),
                   "dropped": sum(h["dropped"] for h in self.log_history),
                   "reward_mean_last20": float(np.mean([h["reward_mean"] for h in last])) if last else 0.0}
        if c.target:
            metrics[f"success_{c.target}_last20"] = float(np.mean([h.get(f"success_{c.target}", 0) for h in last]))
        if self.best is not None:
            metrics.update(kept_update=self.best["update"], kept_window_reward=self.best["score"])
        if not self.ranks.main:
            self.ranks.wait()
            return metrics
        write_train_results(out, metrics, config=asdict(c), log_history=self.log_history)
        colours = self.game.metadata().get("outcome_colours") if self.game else None
        plot_success(self.log_history, out / "success.png", title=f"alignment ({c.algorithm}, {c.trainable})",
                     colours=colours)
        self.ranks.wait()
        return metrics

    # -- checkpoints -----------------------------------------------------------------------------
    def trainable_state(self) -> dict:
        return {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> Path:
        out = Path(self.config.output_dir)
        final = out / f"checkpoint-{self.update}"
        if not self.ranks.main:  # one rank writes; every rank holds the same weights
            self.ranks.wait()
            return final
        with atomic_dir(final) as tmp, saving(final, remove=False):  # a full disk: one line, no half folder
            save_file(self.trainable_state(), tmp / "trainable.safetensors")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            best = None
            if self.best is not None:
                save_file(self.best["state"], tmp / "best.safetensors")
                best = {k: v for k, v in self.best.items() if k != "state"}
            atomic_write_json(tmp / "state.json", {"update": self.update, "log_history": self.log_history,
                                                   "best": best})
        for old in checkpoints(out)[max(self.config.save_total_limit, 1):]:
            shutil.rmtree(old, ignore_errors=True)
        self.ranks.wait()
        return final

    def load_checkpoint(self, path) -> None:
        path = Path(path)
        state = load_file(path / "trainable.safetensors")
        params = dict(self.model.named_parameters())
        missing = set(state) ^ {n for n, p in params.items() if p.requires_grad}
        if missing:
            raise ValueError(f"{path}: checkpoint parameters do not match this run's trainable={self.config.trainable} "
                             f"({sorted(missing)[:3]} ...); resume with the same recipe")
        self.load_trainable(state)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        saved = json.loads((path / "state.json").read_text())
        self.update, self.log_history = saved["update"], saved["log_history"]
        if saved.get("best"):
            self.best = {**saved["best"], "state": load_file(path / "best.safetensors")}

    def load_trainable(self, state: dict) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)


class Ranks:
    """The processes of this run: one alone, or the ranks of `accelerate launch` / torchrun (gloo on CPU). Each
    rank plays its share of an update's episodes with its own game processes; they sum gradients, one writes."""

    def __init__(self):
        state = launch_state()
        self.rank, self.size, self.main, self.device = (state.process_index, state.num_processes,
                                                        state.is_main_process, state.device)
        self._state = state

    def share(self, groups: np.ndarray) -> list[int]:
        """This rank's episode positions: the spawn groups g with g % size == rank."""
        return [i for i, g in enumerate(groups) if int(g) % self.size == self.rank]

    def _reduce(self, value: float, op) -> float:
        if self.size == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=op)
        return float(t.item())

    def total(self, value: float) -> float:
        return self._reduce(value, torch.distributed.ReduceOp.SUM)

    def largest(self, value: float) -> float:
        return self._reduce(value, torch.distributed.ReduceOp.MAX)

    def gather(self, items: list) -> list:
        """Every rank's items, rank 0's first, on every rank."""
        if self.size == 1:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def sum_gradients(self, params) -> None:
        if self.size == 1:
            return
        for p in params:
            if p.grad is None:  # a rank without episodes this update
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)

    def wait(self) -> None:
        self._state.wait_for_everyone()


def _declared_outcomes(env_fn) -> tuple[str, ...]:
    """The outcomes a game made by `env_fn` declares in its metadata."""
    env = env_fn()
    try:
        return tuple(env.metadata.get("outcomes", ()))
    finally:
        env.close()


def stack_logprobs(episodes) -> np.ndarray:
    T = max(e.length for e in episodes)
    out = np.zeros((len(episodes), T), np.float32)
    for i, e in enumerate(episodes):
        out[i, :e.length] = e.logprobs
    return out


def _summary_writer(config: AlignConfig):
    if "tensorboard" not in config.report_to:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(config.output_dir) / "runs"))


def plot_success(log_history: list[dict], out, title="alignment", window: int = 10,
                 colours: dict | None = None) -> Path:
    """Success rate of each outcome over updates (moving average), as the paper's Figures 8-9; `colours`
    (outcome -> colour): the game's own, as its evaluation figures use them."""
    from hf_agents.rollout.plots import NO_OUTCOME_COLOUR, plt, save_figure  # the Agg backend, set there

    fig, ax = plt.subplots(figsize=(6, 3.6))
    episodes = np.cumsum([h["episodes"] for h in log_history])
    for key in sorted(k for k in (log_history[0] if log_history else {}) if k.startswith("success_")):
        values = np.asarray([h.get(key, 0.0) for h in log_history])
        smooth = np.convolve(values, np.ones(window) / window, mode="valid") if len(values) >= window else values
        outcome = key.removeprefix("success_")
        colour = NO_OUTCOME_COLOUR if outcome == NO_OUTCOME else (colours or {}).get(outcome)
        ax.plot(episodes[len(episodes) - len(smooth):], smooth, label=outcome, color=colour)
    ax.set_xlabel("episodes")
    ax.set_ylabel(f"share of episodes (mean of {window} updates)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, out)


def run(config: AlignConfig) -> dict:
    resume_from = check_output_dir(config)
    trainer = AlignTrainer(config)  # every check (reward model, target, agent) before any rollout
    if resume_from:
        trainer.load_checkpoint(resume_from)
    else:
        clear_checkpoints(config)
    return trainer.train()


CONFIG = AlignConfig
REQUIRED = ("agent", "output_dir")
