r"""Evaluation metrics of the PM paper's Section 6.1 (``prefmatch eval``).

For each prompt x of the evaluation data, two responses y1, y2 are sampled from the policy and

* **PM divergence**: instance KL(p_llm ‖ p_reward) between the policy's pairwise preference
  p_llm(y1) = π(y1|x)/(π(y1|x) + π(y2|x)) and the reward model's Bradley–Terry preference
  p_reward(y1) = σ(r(x, y1) − r(x, y2)) (raw scores, no normalisation), averaged over prompts
  (``prefmatch.theory.distributions.pm_divergence``);
* **perplexity**: E_y[π(y|x)^{−1/|y|}];
* **entropy**: E_y[−log π(y|x)];
* **length**: E_y[|y|] (tokens, EOS included);
* **KL**: E_y[log π(y|x) − log π_ref(y|x)].

All expectations are Monte-Carlo averages over the sampled responses.  Sequence log-probs are
teacher-forced (:func:`sequence_logprobs`), at sampling temperature 1, so they are the policy's
own probabilities.
"""
from __future__ import annotations

from collections.abc import Sequence

from prefmatch.llm.data import encode_prompt, encode_response, held_out, load_split, pad_batch
from prefmatch.llm.models import load_causal_lm, load_reward_model, reward_scores, token_logprobs
from prefmatch.llm.tokenizer import load_tokenizer, same_tokenizer
from prefmatch.theory.distributions import pm_divergence, pm_squared_error

METRIC_NAMES = ("pm_divergence", "perplexity", "entropy", "length", "kl")
#: the unit of each metric (``eval`` prints them; ``--json`` gives them under "units")
METRIC_UNITS = {
    "pm_divergence": "nats (KL between reward-model and policy pairwise preferences, per pair)",
    "perplexity": "exp(mean token NLL) of the policy on its own samples, per response",
    "entropy": "nats per response (−log π(y|x) of a sample)",
    "length": "tokens per response",
    "kl": "nats per response (Σ_t k3 to the reference)",
}


def run_config(path: str) -> dict:
    """The resolved config.yaml of the `prefmatch train` run that wrote ``path`` (a run directory or
    the ``model`` folder inside one); ``{}`` for a bare model directory."""
    from pathlib import Path

    import yaml

    p = Path(path)
    for cand in (p / "config.yaml", p.parent / "config.yaml"):
        if cand.is_file():
            return yaml.safe_load(cand.read_text(encoding="utf-8")) or {}
    return {}


def run_defaults(policy: str) -> dict:
    """Defaults for ``eval`` from the run that trained ``policy`` (a run directory, or the ``model``
    folder inside one): its data and seeded split, its generation length, its reward model and its
    reference.  Empty when ``policy`` is a bare model directory."""
    cfg = run_config(policy)
    if not cfg:
        return {}
    refs = cfg.get("ref") or cfg.get("reference") or []
    out = {"data": cfg.get("data"), "split_fractions": cfg.get("split_fractions"), "split_seed": cfg.get("split_seed"),
           "max_new_tokens": cfg.get("max_response_len"), "max_prompt_len": cfg.get("max_prompt_len"),
           "reward_model": cfg.get("reward_model") or None,
           "ref": refs[0] if refs else (cfg.get("policy") or cfg.get("model") or None)}
    return {k: v for k, v in out.items() if v not in (None, "", [])}


def sequence_logprobs_ids(model, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                          pad_id: int, batch_size: int = 32, device=None, per_token: bool = False):
    """Teacher-forced log π(y|x) = Σ_t log π(y_t|x, y_<t) from token ids; float64 tensor [N].

    With ``per_token`` also returns the list of per-token log-prob tensors.
    """
    import torch

    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"prompts and responses differ in number ({len(prompt_ids)} vs {len(response_ids)})")
    device = device or next(model.parameters()).device
    out, toks = [], []
    with torch.no_grad():
        for i in range(0, len(prompt_ids), batch_size):
            ps, rs = prompt_ids[i:i + batch_size], response_ids[i:i + batch_size]
            ids, mask = pad_batch([list(p) + list(r) for p, r in zip(ps, rs)], pad_id)
            rmask, _ = pad_batch([[0] * len(p) + [1] * len(r) for p, r in zip(ps, rs)], 0)
            lp = token_logprobs(model, ids.to(device), mask.to(device)).double().cpu()
            rm = rmask[:, 1:].double()
            out.append((lp * rm).sum(-1))
            if per_token:
                toks += [lp[b][rm[b] > 0] for b in range(lp.shape[0])]
    seq = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
    return (seq, toks) if per_token else seq


def sequence_logprobs(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32,
                      max_prompt_len: int = 256, max_response_len: int = 256, device=None, per_token: bool = False):
    """Teacher-forced log π(y|x) of text responses (tokenised as in training, EOS appended): [N].

    The opinion benchmark's exact answer-set distributions use it: for an enumerable answer set
    {y_1..y_n}, ``softmax(sequence_logprobs(...))`` is the policy conditioned on that set.
    """
    p_ids = [encode_prompt(tokenizer, p, max_prompt_len) for p in prompts]
    r_ids = [encode_response(tokenizer, r, max_response_len) for r in responses]
    return sequence_logprobs_ids(model, p_ids, r_ids, tokenizer.pad_token_id, batch_size, device, per_token)


def sample_responses(model, tokenizer, prompts: Sequence[str], n: int = 2, max_new_tokens: int = 64,
                     max_prompt_len: int = 256, seed: int = 0, batch_size: int = 32, temperature: float = 1.0,
                     device=None):
    """``n`` sampled responses per prompt, reproducible by ``seed``.

    Returns ``(prompt_ids, response_ids)``: per prompt its token ids, and per prompt a list of
    ``n`` response token-id lists (up to and including EOS when one was generated).
    """
    import torch

    device = device or next(model.parameters()).device
    torch.manual_seed(seed)
    p_ids = [encode_prompt(tokenizer, p, max_prompt_len) for p in prompts]
    out: list[list[list[int]]] = [[] for _ in prompts]
    flat = [i for i in range(len(prompts)) for _ in range(n)]
    with torch.no_grad():
        for s in range(0, len(flat), batch_size):
            chunk = flat[s:s + batch_size]
            ids, mask = pad_batch([p_ids[i] for i in chunk], tokenizer.pad_token_id, side="left")
            seq = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                                 max_new_tokens=max_new_tokens, temperature=temperature, top_k=0, top_p=1.0,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            for i, row in zip(chunk, seq[:, ids.shape[1]:].tolist()):
                if tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id) + 1]
                out[i].append(row)
    return p_ids, out


def score_responses_ids(reward_model, prompt_ids, response_ids, pad_id: int, batch_size: int = 32, device=None,
                        normalize: bool = False):
    """Reward-model scores r(x, y) [N] from token ids (raw by default: BT uses raw differences)."""
    import torch

    device = device or next(reward_model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(prompt_ids), batch_size):
            seqs = [list(p) + list(r) for p, r in zip(prompt_ids[i:i + batch_size], response_ids[i:i + batch_size])]
            ids, mask = pad_batch(seqs, pad_id)
            out.append(reward_scores(reward_model, ids.to(device), mask.to(device), normalize=normalize).double().cpu())
    return torch.cat(out)


def token_kl_k3(policy_tokens, ref_tokens):
    """Per-sequence KL estimate Σ_t k3_t, k3 = e^{q−l} − 1 − (q − l) with l, q the policy's and the
    reference's token log-probs of a sampled response: every term is ≥ 0 and unbiased for the
    per-token KL(π(·|prefix) ‖ π_ref(·|prefix)), so the sum is a non-negative unbiased estimate of
    the sequence KL (the plain Σ_t (l − q) is unbiased too but goes negative on single samples)."""
    import numpy as np

    out = []
    for lt, qt in zip(policy_tokens, ref_tokens):
        d = np.asarray(qt, float) - np.asarray(lt, float)
        out.append(float(np.sum(np.expm1(d) - d)))
    return np.asarray(out)


def check_finite_logprobs(name: str, *arrays) -> None:
    """ValueError naming the model whose log-probabilities are NaN/inf where they must be finite."""
    import numpy as np

    for a in arrays:
        if not np.all(np.isfinite(np.asarray(a, float))):
            raise ValueError(f"{name}: the model gives non-finite log-probabilities (NaN/inf weights or logits) "
                             "on the sampled responses; it cannot be evaluated")


def pair_scores(policy, ref, reward_model, prompt_ids, y1, y2, pad_id: int, batch_size: int = 32,
                device=None) -> dict:
    """Teacher-forced log-probs under ``policy`` and ``ref`` and reward scores of sampled pairs (y1, y2).

    Returns ``lp1, lp2, rf1, rf2, r1, r2`` (float64 tensors [N]) and the per-token log-probs
    ``lt1, lt2`` (policy) and ``qt1, qt2`` (reference), lists of tensors.
    """
    kw = dict(pad_id=pad_id, batch_size=batch_size, device=device)
    (lp1, lt1), (lp2, lt2) = (sequence_logprobs_ids(policy, prompt_ids, y, per_token=True, **kw) for y in (y1, y2))
    (rf1, qt1), (rf2, qt2) = (sequence_logprobs_ids(ref, prompt_ids, y, per_token=True, **kw) for y in (y1, y2))
    r1, r2 = (score_responses_ids(reward_model, prompt_ids, y, **kw) for y in (y1, y2))
    return {"lp1": lp1, "lp2": lp2, "lt1": lt1, "lt2": lt2, "rf1": rf1, "rf2": rf2, "qt1": qt1, "qt2": qt2,
            "r1": r1, "r2": r2}


def summarize(logp1, logp2, ref1, ref2, r1, r2, len1, len2, kl1=None, kl2=None, beta: float = 1.0) -> dict:
    """The Section 6.1 metrics from per-pair arrays (torch or numpy), plus the instance PM divergences.

    ``kl1``/``kl2`` (optional): per-sequence non-negative KL estimates (:func:`token_kl_k3`); without
    them the KL is the mean of log π − log π_ref over the samples. ``beta`` tempers
    p_reward = σ((r1 − r2)/β) as the PM paper's Table 5 does (1: raw scores)."""
    import numpy as np

    lp = np.concatenate([np.asarray(logp1, float), np.asarray(logp2, float)])
    ref = np.concatenate([np.asarray(ref1, float), np.asarray(ref2, float)])
    ln = np.concatenate([np.asarray(len1, float), np.asarray(len2, float)])
    kl = (np.mean(np.concatenate([np.asarray(kl1, float), np.asarray(kl2, float)])) if kl1 is not None
          else np.mean(lp - ref))
    inst = pm_divergence(np.asarray(logp1, float), np.asarray(logp2, float), np.asarray(r1, float) / beta,
                         np.asarray(r2, float) / beta)
    sq = pm_squared_error(np.asarray(logp1, float), np.asarray(logp2, float), np.asarray(r1, float),
                          np.asarray(r2, float))
    return {
        "pm_divergence": float(np.mean(inst)),
        "pm_squared_error": float(np.mean(sq)),
        "perplexity": float(np.mean(np.exp(-lp / np.maximum(ln, 1)))),
        "entropy": float(np.mean(-lp)),
        "length": float(np.mean(ln)),
        "kl": float(kl),
        "instance_pm_divergence": [float(x) for x in inst],
        "instance_pm_squared_error": [float(x) for x in sq],
    }


def eval_records(data: str, split: str, reward: str, split_fractions=(0.2, 0.4, 0.4), split_seed: int = 0,
                 tokenizer=None, keys=("prompt",)) -> list[dict]:
    """The records ``eval`` samples on: a part of the seeded split, or (``heldout``) the pairs the
    reward model ``reward`` held out for its pairwise accuracy (its run's eval_fraction and seed),
    which no stage trains on."""
    if split != "heldout":
        return load_split(data, split, split_fractions, split_seed, keys=keys, tokenizer=tokenizer)
    rm_run = run_config(reward)
    part = load_split(data, "rm", split_fractions, split_seed, keys=keys, tokenizer=tokenizer)
    records = held_out(part, rm_run.get("eval_fraction", 0.1), rm_run.get("seed", 0))[1]
    if not records:
        raise ValueError(f"--split heldout: the reward model {reward} held out no pairs (eval_fraction 0); "
                         "give --split all, sft, rm or rl")
    return records


def evaluate(policy: str, reward: str, ref: str, data: str, n_prompts: int = 64, max_new_tokens: int = 64,
             max_prompt_len: int = 256, seed: int = 0, split: str = "all", split_fractions=(0.2, 0.4, 0.4),
             split_seed: int = 0, batch_size: int = 32, quiet: bool = True, device: str | None = None) -> dict:
    """Sample two responses per prompt from ``policy`` and compute the Section 6.1 metrics."""
    import torch

    tok = load_tokenizer(policy)
    records = eval_records(data, split, reward, split_fractions, split_seed, tok)[:n_prompts]
    prompts = [r["prompt"] for r in records]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for what, d in (("--reward", reward), ("--ref", ref)):
        if not same_tokenizer(tok, load_tokenizer(d)):
            raise ValueError(f"{what}: the tokenizer in {d} does not match the policy's ({policy})")
    pol = load_causal_lm(policy, what="policy").to(dev).eval()
    ref_m = load_causal_lm(ref, what="ref").to(dev).eval()
    rm = load_reward_model(reward, what="reward").to(dev).eval()
    for what, d, m in (("--policy", policy, pol), ("--ref", ref, ref_m), ("--reward", reward, rm)):
        if not all(bool(torch.isfinite(p).all()) for p in m.parameters()):
            raise ValueError(f"{what}: the weights in {d} contain NaN/inf; it cannot be evaluated")
    tok.padding_side = "left"
    p_ids, samples = sample_responses(pol, tok, prompts, n=2, max_new_tokens=max_new_tokens,
                                      max_prompt_len=max_prompt_len, seed=seed, batch_size=batch_size, device=dev)
    y1 = [s[0] for s in samples]
    y2 = [s[1] for s in samples]
    s = pair_scores(pol, ref_m, rm, p_ids, y1, y2, tok.pad_token_id, batch_size, dev)
    check_finite_logprobs(f"--policy {policy}", s["lp1"], s["lp2"])
    check_finite_logprobs(f"--ref {ref}", s["rf1"], s["rf2"])
    check_finite_logprobs(f"--reward {reward} (its scores)", s["r1"], s["r2"])
    out = summarize(s["lp1"], s["lp2"], s["rf1"], s["rf2"], s["r1"], s["r2"], [len(y) for y in y1],
                    [len(y) for y in y2], kl1=token_kl_k3(s["lt1"], s["qt1"]), kl2=token_kl_k3(s["lt2"], s["qt2"]))
    out["n_prompts"] = len(prompts)
    return out
