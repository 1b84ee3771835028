#!/usr/bin/env bash
# OPT-1.3B (facebook/opt-1.3b saved locally with save_pretrained): the four stages of examples/run_stages.sh with this folder's configs.
# Usage: MODEL=/path/to/local/model DATA=/path/to/hh-rlhf.jsonl bash examples/opt-1.3b/run.sh
exec bash "$(dirname "$0")/../run_stages.sh" "$(dirname "$0")"
