#!/usr/bin/env bash
# SmolLM2-135M(-Instruct) converted to a local HF dir (see the opinion benchmark): the four stages of examples/run_stages.sh with this folder's configs.
# Usage: MODEL=/path/to/local/model DATA=/path/to/hh-rlhf.jsonl bash examples/smollm2-135m/run.sh
exec bash "$(dirname "$0")/../run_stages.sh" "$(dirname "$0")"
