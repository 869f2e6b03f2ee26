#!/usr/bin/env bash
# Which representation of the agent embeds a step best for the reward model (issue: reward models a designer can
# trust, suspect (c)): the frame encoder's output, the hidden state after each GPT2 block, the transformer's
# output (the paper's, the default), beside the random projection of the pixels; held-out accuracy at 100
# comparisons drawn the paper's way (every pair among the fewest training trajectories) and with all of them,
# 3 seeds, on the same on-policy rollouts. Usage: scripts/reward_representations.sh ROLLOUTS AGENT OUT
set -euo pipefail
cd "$(dirname "$0")/.."
rollouts=${1:-outputs/rollouts/sft} agent=${2:-outputs/sft} out=${3:-outputs/reward-representations}
layers=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1] + '/config.json'))['num_layers'])" "$agent")
encoders=(agent agent:frames)
for ((k = 0; k < layers; k++)); do encoders+=("agent:block-$k"); done
encoders+=(random)
HF_HUB_OFFLINE=1 .venv/bin/hf-agents reward sweep "$rollouts" --agent "$agent" --output_dir "$out" --targets left \
  --sizes 100 0 --seeds 0 1 2 --sampling trajectories --encoders "${encoders[@]}"
