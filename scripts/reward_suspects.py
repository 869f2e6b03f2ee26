"""Why a reward model tells the designer's outcome apart, or not: the suspects side by side on the same rollouts.

Each trajectory is embedded once per encoder (the random projection of the pixels, the agent's transformer output,
its frame encoder, the hidden state after a GPT2 block), then small Bradley-Terry heads are trained on the frozen
embeddings for each trajectory-MLP layout (the paper's concatenation with the padding after or in front of the
trajectory, or a sum over steps) and each training setting (the paper's lr 1e-4 with L2 0.1, or lr 1e-3 without
L2), 300 steps of up to 256 comparisons, for each seed (the split of the trajectories into halves, the sampled
comparisons, the initialisation) and each number of training comparisons (100 drawn the paper's way, among the
fewest training trajectories that give them; 0: all). Held-out accuracy on every comparison among the other half,
by kind (target > another pad, ...), and each outcome's mean reward, one JSON line per run.

    python scripts/reward_suspects.py ROLLOUTS AGENT OUT.json [TARGET]
    env: SEEDS=0,1,2 ENCODERS=random,last,frames,block-1 LAYOUTS=concat-right,concat-left,sum OPTIMS=paper,fast
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hf_agents.data import load_trajectories
from hf_agents.data.preferences import synthetic_rank
from hf_agents.data.schema import NO_OUTCOME
from hf_agents.models import AgentModel, TrajectoryRewardModel
from hf_agents.models.configuration_reward import TrajectoryRewardConfig
from hf_agents.models.modeling_reward import padding_to_front, real_steps

LAYOUTS = ("concat-right", "concat-left", "sum")
OPTIMS = {"paper": (1e-4, 0.1), "fast": (1e-3, 0.0)}  # learning rate, L2 penalty


def choice(name: str, default: str) -> list[str]:
    return os.environ.get(name, default).split(",")


def embed_all(trajectories, agent_path: str, encoders: list[str], cache_path: str) -> dict:
    """encoder -> (episodes, 100, D) embeddings padded after each trajectory, cached on disk."""
    cache = torch.load(cache_path, weights_only=True) if os.path.exists(cache_path) else {}
    agent = AgentModel.from_pretrained(agent_path)
    for name in [e for e in encoders if e not in cache]:
        if name == "random":
            model = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=agent.config.image_size,
                                                                 padding_side="right"))
        else:
            model = TrajectoryRewardModel.from_agent(agent, agent_layer=name, padding_side="right")
        cache[name] = model.embed_dataset(trajectories, progress=False)
        torch.save(cache, cache_path)
    return cache


class Head(nn.Module):
    """The per-step MLP (256, GELU, 3) and a trajectory head of the given layout."""

    def __init__(self, size: int, layout: str, steps: int = 100):
        super().__init__()
        self.layout = layout
        self.step = nn.Sequential(nn.Linear(size, 256), nn.GELU(), nn.Linear(256, 3))
        self.trajectory = (nn.Sequential(nn.Linear(steps * 3, 256), nn.GELU(), nn.Linear(256, 1))
                           if layout.startswith("concat") else nn.Linear(3, 1))

    def forward(self, embeddings, lengths):
        if self.layout == "concat-left":
            embeddings = padding_to_front(embeddings, lengths)
        per_step = self.step(embeddings)
        if self.layout == "sum":
            mask = real_steps(lengths, embeddings.shape[1]).float()[..., None]
            return self.trajectory((per_step * mask).sum(1) / 10)[:, 0]
        return self.trajectory(per_step.flatten(1))[:, 0]


def main(rollouts: str, agent_path: str, out: str, target: str = "left") -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    trajectories = load_trajectories(rollouts)
    episodes = trajectories.episodes
    lengths = torch.as_tensor([min(e["length"], 100) for e in episodes])
    encoders = choice("ENCODERS", "random,last,frames")
    cache = embed_all(trajectories, agent_path, encoders, out + ".emb.pt")

    def pairs_of(index):
        pairs = []
        for a, b in itertools.combinations(index, 2):
            rank_a, rank_b = synthetic_rank(episodes[a], target), synthetic_rank(episodes[b], target)
            if rank_a != rank_b:
                pairs.append((a, b) if rank_a > rank_b else (b, a))
        return pairs

    def kind(chosen, rejected):
        good, bad = episodes[chosen]["outcome"], episodes[rejected]["outcome"]
        if good == bad:
            return "same outcome"
        if good == target:
            return "target>none" if bad == NO_OUTCOME else "target>pad"
        return "pad>none"

    results = []
    for seed in map(int, choice("SEEDS", "0,1,2")):
        order = list(range(len(episodes)))
        random.Random(seed).shuffle(order)
        train, held_out = order[:len(order) // 2], order[len(order) // 2:]
        eval_pairs = torch.as_tensor(pairs_of(held_out))
        kinds = np.asarray([kind(int(c), int(r)) for c, r in eval_pairs])
        for size in (100, 0):
            if size:  # the paper's way: the fewest training trajectories whose pairs number at least `size`
                k = 2
                while len(pairs_of(train[:k])) < size:
                    k += 1
                train_pairs = random.Random(seed).sample(pairs_of(train[:k]), size)
            else:
                train_pairs = pairs_of(train)
            for encoder, layout, optim in itertools.product(encoders, choice("LAYOUTS", ",".join(LAYOUTS)),
                                                            choice("OPTIMS", "paper,fast")):
                embeddings = cache[encoder]
                if encoder == "random":  # standardised per dimension over the training steps (as the library)
                    used = sorted({i for pair in train_pairs for i in pair})
                    steps = embeddings[used][real_steps(lengths[used], 100)]
                    embeddings = (embeddings - steps.mean(0)) / steps.std(0).clamp(min=1e-6)
                torch.manual_seed(seed)
                head = Head(embeddings.shape[2], layout)
                lr, l2 = OPTIMS[optim]
                optimizer = torch.optim.Adam(head.parameters(), lr=lr)
                pairs = torch.as_tensor(train_pairs)
                for _ in range(300):
                    batch = pairs[torch.randint(len(pairs), (min(256, len(pairs)),))]
                    distinct, slot = torch.unique(batch.flatten(), return_inverse=True)
                    rewards = head(embeddings[distinct], lengths[distinct])[slot.view(-1, 2)]
                    loss = -F.logsigmoid(rewards[:, 0] - rewards[:, 1]).mean()
                    loss = loss + 0.5 * l2 * sum(p.pow(2).sum() for p in head.parameters())
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                with torch.no_grad():
                    rewards = head(embeddings, lengths)
                correct = (rewards[eval_pairs[:, 0]] > rewards[eval_pairs[:, 1]]).numpy()
                result = dict(seed=seed, size=size, encoder=encoder, layout=layout, optim=optim,
                              accuracy=round(float(correct.mean()), 3),
                              by_kind={k: round(float(correct[kinds == k].mean()), 3) for k in sorted(set(kinds))},
                              mean_reward={o: round(float(np.mean([float(rewards[i]) for i in held_out
                                                                   if episodes[i]["outcome"] == o])), 2)
                                           for o in sorted({episodes[i]["outcome"] for i in held_out})})
                results.append(result)
                print(json.dumps(result), flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
