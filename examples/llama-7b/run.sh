#!/usr/bin/env bash
# a Llama-style 7B (e.g. Llama-2-7B saved locally); LoRA keeps it on one 80 GB GPU: the four stages of examples/run_stages.sh with this folder's configs.
# Usage: MODEL=/path/to/local/model DATA=/path/to/hh-rlhf.jsonl bash examples/llama-7b/run.sh
exec bash "$(dirname "$0")/../run_stages.sh" "$(dirname "$0")"
