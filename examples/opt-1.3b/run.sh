#!/usr/bin/env bash
# opt-1.3b: the four stages of examples/run_stages.sh with this folder's configs.
# Usage: MODEL=/path/to/local/model DATA=/path/to/hh-rlhf.jsonl bash examples/opt-1.3b/run.sh
# 8 GPUs: LAUNCH="accelerate launch --config_file examples/accelerate/deepspeed_zero2.yaml -m" MODEL=... bash ...
exec bash "$(dirname "$0")/../run_stages.sh" "$(dirname "$0")"
