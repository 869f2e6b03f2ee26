"""On-policy rollouts of an agent on JumpPads with look-alike pads (every pad wears one look, so only where a pad is
tells it apart): the reward-model experiment on whether the pads' colours give the outcome away.

    python scripts/lookalike_rollouts.py AGENT EVAL_DIR ROLLOUTS_DIR [EPISODES]
"""

from __future__ import annotations

import functools
import sys

import gymnasium as gym

from hf_agents.envs import JUMPPADS_ID
from hf_agents.models import AgentModel, AgentPolicy
from hf_agents.rollout.evaluate import evaluate_policy


def main(agent_path: str, eval_dir: str, rollouts: str, episodes: str = "300") -> None:
    agent = AgentModel.from_pretrained(agent_path).eval()
    env_fn = functools.partial(gym.make, f"hf_agents.envs:{JUMPPADS_ID}", frame_size=agent.config.image_size,
                               disable_env_checker=True, pads_look_alike=True)
    policy = AgentPolicy(agent, 8, temperature=1.0, seed=12345)
    policy.checkpoint = agent_path
    summary = evaluate_policy(policy, eval_dir, env_fn, episodes=int(episodes), num_envs=8, seed=12345, videos=2,
                              label="look-alike pads", progress=False, trajectories=rollouts, overwrite=True)
    print(summary["distribution"])


if __name__ == "__main__":  # the env workers are spawned processes
    main(*sys.argv[1:])
