#!/usr/bin/env bash
# The paper-scale chain (recipes/gpu/, `hf-agents demo --scale gpu`) end to end on whatever machine this
# is, with only its sizes shrunk: a tiny model, a few steps, small batches and few episodes. Everything else
# is the recipes' own (128 px BMP frames, bf16, torch.compile, 8 loader workers, REINFORCE on the head, ...),
# so a recipe that cannot run fails here before a GPU is rented. The first argument is where the outputs go
# (default outputs-gpu-dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
out=${1:-outputs-gpu-dry-run}
venv=${HF_AGENTS_VENV:-.venv}
hf=$venv/bin/hf-agents
gpu=hf_agents/recipes/gpu
small=(overwrite=true max_steps=2 per_device_train_batch_size=2 per_device_eval_batch_size=2
       disable_tqdm=true)
# without a GPU the Trainer runs bf16 on the CPU only when told to
if ! "$venv/bin/python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  small+=(use_cpu=true)
fi
train() { "$venv/bin/python" -m hf_agents.training "$@"; }
"$hf" data generate pretrain --out "$out/data/pretrain" --episodes 16 --size 128 --frame-codec bmp --overwrite
"$hf" data generate sft --out "$out/data/sft" --per-pad 4 --size 128 --frame-codec bmp --overwrite
train $gpu/pretrain.yaml dataset="$out/data/pretrain" output_dir="$out/pretrain" model_preset=tiny \
  gradient_accumulation_steps=1 eval_steps=2 save_steps=2 "${small[@]}"
train $gpu/sft.yaml dataset="$out/data/sft" init_from="$out/pretrain" output_dir="$out/sft" eval_steps=2 \
  save_steps=2 "${small[@]}"
train $gpu/scratch.yaml dataset="$out/data/sft" output_dir="$out/scratch" model_preset=tiny eval_steps=2 \
  save_steps=2 "${small[@]}"
"$hf" evaluate "$out/sft" --episodes 24 --num-envs 4 --videos 0 --trajectories "$out/rollouts/sft" --overwrite
# a tiny agent after a few steps reaches no pad: the reward model learns from the demonstrations instead
"$hf" preferences synthetic "$out/data/sft" --target left --out "$out/preferences-left.parquet"
train $gpu/reward.yaml trajectories="$out/data/sft" preferences="$out/preferences-left.parquet" \
  agent="$out/sft" output_dir="$out/reward-left-agent" num_train_epochs=1 eval_fraction=0.3 "${small[@]}"
train $gpu/preference_ft.yaml target=left agent="$out/sft" reward_model="$out/reward-left-agent" \
  output_dir="$out/preference-ft-left" rollout_episodes=8 num_envs=2 gradient_accumulation_steps=1 \
  "${small[@]}"
train $gpu/align.yaml target=left agent="$out/preference-ft-left" reward_model="$out/reward-left-agent" \
  output_dir="$out/align-left" num_updates=1 episodes_per_update=4 num_envs=2 overwrite=true
echo "every recipes/gpu stage ran: $out"
