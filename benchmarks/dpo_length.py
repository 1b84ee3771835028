"""Why the README's DPO example prints an accuracy below chance: the length of the answers.

    python benchmarks/dpo_length.py MODEL_DIR [--data prefs.jsonl] [--split rm]

For the pairs of one part of the seeded split it prints the mean token length of the chosen and
the rejected answers, and the pairwise accuracy and mean margin of log π(y|x) summed over tokens
(the implicit reward of the reference-free regularizers pm and maxent, up to β) next to the
accuracy of the per-token mean log π(y|x).  Run in the README's folder, on runs/sft (before DPO)
and runs/dpo (after).
"""
from __future__ import annotations

import argparse
import json

from prefmatch.llm.data import encode_response, load_split
from prefmatch.llm.metrics import run_config, sequence_logprobs
from prefmatch.llm.models import load_causal_lm
from prefmatch.llm.tokenizer import load_tokenizer


def length_report(model_dir: str, data: str, split: str = "rm", max_prompt_len: int = 64,
                  max_response_len: int = 32) -> dict:
    import torch

    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir).eval()
    recs = load_split(data, split, tokenizer=tok)
    prompts = [r["prompt"] for r in recs]
    lw = sequence_logprobs(model, tok, prompts, [r["chosen"] for r in recs], max_prompt_len=max_prompt_len,
                           max_response_len=max_response_len)
    ll = sequence_logprobs(model, tok, prompts, [r["rejected"] for r in recs], max_prompt_len=max_prompt_len,
                           max_response_len=max_response_len)
    nw = torch.tensor([len(encode_response(tok, r["chosen"], max_response_len)) for r in recs], dtype=torch.float64)
    nl = torch.tensor([len(encode_response(tok, r["rejected"], max_response_len)) for r in recs], dtype=torch.float64)
    return {"pairs": len(recs), "tokens_chosen": float(nw.mean()), "tokens_rejected": float(nl.mean()),
            "accuracy_sum_logp": float((lw > ll).double().mean()), "margin_sum_logp": float((lw - ll).mean()),
            "accuracy_per_token_logp": float(((lw / nw) > (ll / nl)).double().mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model or `prefmatch train` run directory")
    ap.add_argument("--data", default=None, help="preference jsonl (default: the run's)")
    ap.add_argument("--split", default="rm", help="part of the seeded split (default rm: DPO's)")
    a = ap.parse_args(argv)
    cfg = run_config(a.model)
    data = a.data or cfg.get("data")
    if not data:
        ap.error("--data: required (the model is not inside a run directory that names its data)")
    print(json.dumps(length_report(a.model, data, a.split, cfg.get("max_prompt_len", 64),
                                   cfg.get("max_response_len", 32))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
