#!/usr/bin/env bash
# Why agents fall (docs/results.md, "The SFT agent": sampling temperature, model size and frame size): the demo's SFT agent sampled
# at temperatures 0.5 and 0.75, and SFT agents of the 4m preset and of 32 px frames trained with the demo's
# recipes, data and updates; each evaluated on the demo's 300 episodes (seed 12345). Run after
# `bash scripts/demo.sh`; the first argument is where the outputs go (default outputs/why-agents-fall).
# About 12 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
out=${1:-outputs/why-agents-fall}
mkdir -p "$out"
venv=${HF_AGENTS_VENV:-.venv}
hf=$venv/bin/hf-agents
train() { "$venv/bin/python" -m hf_agents.training "$@" overwrite=true disable_tqdm=true report_to=none; }
evaluate() { "$hf" evaluate "$1" --episodes 300 --videos 0 --out "$2" "${@:3}"; }
for t in 0.5 0.75; do
  evaluate outputs/sft "$out/temperature-$t" --temperature "$t"
done
# model size: the 4m preset (3.9M parameters; the demo's cpu preset has 2.0M)
train recipes/pretrain.yaml dataset=outputs/data/pretrain output_dir="$out/pretrain-4m" model_preset=4m
train recipes/sft.yaml dataset=outputs/data/sft init_from="$out/pretrain-4m" output_dir="$out/sft-4m"
evaluate "$out/sft-4m" "$out/sft-4m/eval"
# frame size: the same episodes (same seeds) rendered at 32 px, cpu preset
"$hf" data generate pretrain --out "$out/data-32px/pretrain" --episodes 400 --size 32 --overwrite
"$hf" data generate sft --out "$out/data-32px/sft" --per-pad 80 --size 32 --overwrite
train recipes/pretrain.yaml dataset="$out/data-32px/pretrain" output_dir="$out/pretrain-32px"
train recipes/sft.yaml dataset="$out/data-32px/sft" init_from="$out/pretrain-32px" output_dir="$out/sft-32px"
evaluate "$out/sft-32px" "$out/sft-32px/eval"
for d in temperature-0.5 temperature-0.75 sft-4m/eval sft-32px/eval; do
  "$venv/bin/python" -c "import json, sys; e = json.load(open(sys.argv[1])); \
print(sys.argv[2], e['distribution'], 'falls', e['fell'])" "$out/$d/eval.json" "$d"
done
