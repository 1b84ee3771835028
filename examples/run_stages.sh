#!/usr/bin/env bash
# SFT -> reward model -> PPO (KL and conditional PM) -> evaluation, with the configs of one example folder.
# Usage: MODEL=/path/to/local/model DATA=/path/to/hh-rlhf.jsonl bash examples/run_stages.sh examples/opt-1.3b
# Several GPUs: LAUNCH="accelerate launch --config_file examples/accelerate/deepspeed_zero2.yaml -m" bash ...
set -euo pipefail
HERE=${1:?usage: run_stages.sh EXAMPLE_DIR}
NAME=$(basename "$HERE")
MODEL=${MODEL:-models/$NAME}
DATA=${DATA:-data/hh-rlhf.jsonl}
OUT=${OUT:-out/$NAME}
LAUNCH=${LAUNCH:-python -m}
$LAUNCH prefmatch train sft --config "$HERE/sft.yaml" --model "$MODEL" --data "$DATA" --out "$OUT/sft"
$LAUNCH prefmatch train rm  --config "$HERE/rm.yaml" --model "$OUT/sft/model" --data "$DATA" --out "$OUT/rm"
for REG in kl cpm; do
  $LAUNCH prefmatch train ppo --config "$HERE/ppo_$REG.yaml" --policy "$OUT/sft/model" --ref "$OUT/sft/model" \
      --reward-model "$OUT/rm/model" --data "$DATA" --out "$OUT/ppo_$REG"
  python -m prefmatch eval --policy "$OUT/ppo_$REG/model" --reward "$OUT/rm/model" --ref "$OUT/sft/model" \
      --data "$DATA" --split rl --n-prompts 500 --max-new-tokens 256 --json > "$OUT/eval_$REG.json"
done
