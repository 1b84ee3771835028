#!/usr/bin/env bash
# a Llama-style 7B (e.g. Llama-2-7B saved locally); LoRA keeps it on one 80 GB GPU: SFT -> reward model -> PPO (KL and conditional PM) -> evaluation.
# Usage: MODEL=/path/to/local/model DATA=/path/to/hh-rlhf.jsonl bash examples/llama-7b/run.sh
# Several GPUs: LAUNCH="accelerate launch --config_file examples/accelerate/deepspeed_zero2.yaml -m" bash ...
set -euo pipefail
MODEL=${MODEL:-models/llama-7b}
DATA=${DATA:-data/hh-rlhf.jsonl}
OUT=${OUT:-out/llama-7b}
LAUNCH=${LAUNCH:-python -m}
HERE=$(dirname "$0")
$LAUNCH prefmatch train sft --config "$HERE/sft.yaml" --model "$MODEL" --data "$DATA" --out "$OUT/sft"
$LAUNCH prefmatch train rm  --config "$HERE/rm.yaml" --model "$OUT/sft/model" --data "$DATA" --out "$OUT/rm"
for REG in kl cpm; do
  $LAUNCH prefmatch train ppo --config "$HERE/ppo_$REG.yaml" --policy "$OUT/sft/model" --ref "$OUT/sft/model" \
      --reward-model "$OUT/rm/model" --data "$DATA" --out "$OUT/ppo_$REG"
  python -m prefmatch eval --policy "$OUT/ppo_$REG/model" --reward "$OUT/rm/model" --ref "$OUT/sft/model" \
      --data "$DATA" --split rl --n-prompts 500 --max-new-tokens 256 --json > "$OUT/eval_$REG.json"
done
