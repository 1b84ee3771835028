r"""Aggregation over seeds: the JSON rows, the Table-3-shaped grid, the phase diagram and the claims.

Every interval is a 95 % Student-t interval over seeds, mean ± t·s/√n with t the 97.5 % quantile of Student's t with n − 1 degrees of freedom (``None`` with
one seed, except the §6.1 reduction: a bootstrap interval over that seed's evaluation samples).
A reduction is computed per seed, (KL − cPM)/KL on that seed's world, then averaged.
Every claim carries its criterion and is evaluated on the numbers of the run; one that fails is
reported as not holding.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from prefmatch.llm.opinion.world import MALFORMED_KINDS

#: the PM paper's Table 3 (OPT-1.3B): (β, α) → PM divergence; α = None is KL RLHF
PAPER_TABLE3_PM_DIVERGENCE: dict[tuple[float, float | None], float] = {
    (0.1, 0.1): 0.7976, (0.1, 0.3): 0.7083, (0.1, 0.5): 0.6839, (0.1, None): 1.1555,
    (0.5, 0.1): 0.9732, (0.5, 0.3): 0.9702, (0.5, 0.5): 1.0887, (0.5, None): 1.1957,
    (1.0, 0.1): 1.0967, (1.0, 0.3): 0.9732, (1.0, 0.5): 0.8865, (1.0, None): 1.1737,
}
#: the same table's perplexities
PAPER_TABLE3_PERPLEXITY: dict[tuple[float, float | None], float] = {
    (0.1, 0.1): 7.82, (0.1, 0.3): 7.33, (0.1, 0.5): 7.08, (0.1, None): 6.81,
    (0.5, 0.1): 19.54, (0.5, 0.3): 7.21, (0.5, 0.5): 6.82, (0.5, None): 6.71,
    (1.0, 0.1): 20.82, (1.0, 0.3): 7.94, (1.0, 0.5): 6.78, (1.0, None): 6.64,
}


def paper_reduction(beta: float, alpha: float) -> float | None:
    """The paper's Table 3 reduction (KL − cPM)/KL at (β, α), or None outside its grid."""
    kl, c = PAPER_TABLE3_PM_DIVERGENCE.get((beta, None)), PAPER_TABLE3_PM_DIVERGENCE.get((beta, alpha))
    return None if kl is None or c is None else (kl - c) / kl


ROW_KEYS = ("method", "level", "alpha", "beta", "n_seeds", "pm_divergence", "pm_divergence_ci",
            "pm_divergence_exact", "perplexity_heldout", "perplexity_sample_median", "perplexity_outliers",
            "tokens_in_M", "valid_rate", "entropy", "length", "kl")
#: every per-run metric averaged into a row (besides the contract's)
EXTRA_KEYS = ("pm_divergence_pairs", "pm_divergence_pairs_gt", "pm_squared_error", "pm_squared_error_exact",
              "pm_divergence_valid_pairs", "pm_divergence_invalid_pairs", "pm_squared_error_valid_pairs",
              "pm_squared_error_invalid_pairs", "n_valid_pairs", "n_invalid_pairs", "n_pairs", "rm_prefers_valid", "majority_preference", "rm_majority_preference",
              "gt_majority_preference", "majority_mass", "answer_set_mass", "collapsed_fraction",
              "perplexity_sample_mean", "theory_pm_divergence_exact", "theory_pm_divergence_pairs",
              "theory_majority_preference", "tokens_in_M_reference", "kl_k1", "train_time_s", "wall_time_s")


def mean_ci(xs: Sequence[float | None]) -> tuple[float | None, list[float] | None]:
    """Mean and 95 % t-interval of the non-None values (interval None for fewer than two)."""
    from scipy.stats import t as student_t

    a = np.asarray([x for x in xs if x is not None], np.float64)
    if a.size == 0:
        return None, None
    m = float(a.mean())
    if a.size < 2:
        return m, None
    h = float(student_t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return m, [m - h, m + h]


def wilson_ci(successes: float, n: int, z: float = 1.959963984540054) -> list[float] | None:
    """95 % Wilson score interval of a binomial proportion (``None`` for n = 0)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def rm_eval_pairs(unit: dict, cfg: dict) -> int:
    """Held-out comparisons the unit's reward-model accuracy was measured on (recorded by the
    pipeline; for older records: the share ``RM_EVAL_FRACTION`` of the training prompts' comparisons)."""
    from prefmatch.llm.opinion.config import RM_EVAL_FRACTION

    if unit.get("rm_eval_pairs") is not None:
        return int(unit["rm_eval_pairs"])
    per_prompt = cfg["comparisons_per_prompt"] + cfg.get("content_negatives", 0)
    return int(round(RM_EVAL_FRACTION * per_prompt * unit["n_train_prompts"]))


def reward_model_accuracy(result: dict) -> dict:
    """The main world's reward-model held-out pairwise accuracy pooled over seeds (correct pairs /
    pairs) with its 95 % Wilson interval, and whether that interval lies above chance (0.5)."""
    main = _units(result, result["config"]["bias"])
    pairs = [rm_eval_pairs(u, result["config"]) for u in main]
    correct = sum(u["rm_eval_accuracy"] * n for u, n in zip(main, pairs))
    n = sum(pairs)
    ci = wilson_ci(correct, n)
    return {"accuracy": correct / n if n else None, "accuracy_ci": ci, "pairs": n,
            "above_chance": bool(ci and ci[0] > 0.5)}


def _seeds(result: dict) -> list[int]:
    """The seeds of the main world's units (a merged run: every part's)."""
    return sorted({u["seed"] for u in result["units"] if u["bias"] == result["config"]["bias"]})


def merge_parts(parts: Sequence[dict]) -> dict:
    """One result from runs of the same configuration on disjoint seeds (``first_seed``): their
    units together; refused when the settings other than the seeds differ or a seed repeats."""
    if len(parts) == 1:
        return parts[0]
    own = ("seeds", "first_seed", "jobs", "phase_seeds")
    base = {k: v for k, v in parts[0]["config"].items() if k not in own}
    for p in parts[1:]:
        diff = sorted(k for k in set(base) | set(p["config"]) if k not in own and base.get(k) != p["config"].get(k))
        if diff:
            raise ValueError(f"results: the parts differ in {', '.join(diff)}; only runs of one configuration on "
                             "disjoint seeds can be merged")
    keys = [(u["seed"], u["bias"]) for p in parts for u in p["units"]]
    if len(set(keys)) != len(keys):
        raise ValueError("results: a (seed, bias) unit appears in two parts; give each part its own first_seed")
    merged = {k: v for k, v in parts[0].items() if k != "summary"}
    merged["units"] = sorted((u for p in parts for u in p["units"]), key=lambda u: (u["bias"], u["seed"]))
    merged["config"] = {**parts[0]["config"], "seeds": len({u["seed"] for u in merged["units"]
                                                           if u["bias"] == base["bias"]})}
    merged["wall_time_s"] = sum(p.get("wall_time_s") or 0.0 for p in parts)
    merged["command"] = " + ".join(dict.fromkeys(p.get("command") or "prefmatch opinion" for p in parts))
    merged["parts"] = len(parts)
    return merged


def _units(result: dict, bias: float) -> list[dict]:
    return [u for u in result["units"] if u["bias"] == bias]


def rows_for(result: dict, bias: float) -> list[dict]:
    """One row per run of the world with reference ``bias`` (the reference first), means over seeds."""
    units = _units(result, bias)
    specs = [{"name": "reference", "method": "reference", "level": None, "alpha": None, "beta": None,
              "trainer": None}] + [dict(r) for r in units[0]["runs"]]
    rows = []
    for spec in specs:
        vals = [u["results"][spec["name"]] for u in units if "error" not in u["results"].get(spec["name"], {"error": 1})]
        errors = [u["results"][spec["name"]]["error"] for u in units if "error" in u["results"].get(spec["name"], {})]
        if not vals:
            rows.append({"name": spec["name"], "method": spec["method"], "level": spec.get("level"),
                         "alpha": spec.get("alpha"), "beta": spec.get("beta"), "trainer": spec.get("trainer"),
                         "top_p": spec.get("top_p", 1.0), "bias": bias, "n_seeds": 0, "errors": errors})
            continue
        row: dict[str, Any] = {"name": spec["name"], "method": spec["method"], "level": spec.get("level"),
                               "alpha": spec.get("alpha"), "beta": spec.get("beta"), "trainer": spec.get("trainer"),
                               "top_p": spec.get("top_p", 1.0), "bias": bias, "n_seeds": len(vals)}
        for k in set(ROW_KEYS[5:]) | set(EXTRA_KEYS):
            if k == "pm_divergence_ci":
                continue
            m, ci = mean_ci([v.get(k) for v in vals])
            row[k] = m
            if k == "pm_divergence":
                row["pm_divergence_ci"] = ci
            elif ci is not None:
                row[k + "_ci"] = ci
        row["errors"] = errors
        row["perplexity_outliers"] = int(sum(v["perplexity_outliers"] for v in vals))
        row["n_samples"] = int(sum(v["n_samples"] for v in vals))
        rows.append(row)
    return rows


def reductions(result: dict, bias: float, beta: float, alpha: float, level: str, metric: str,
               trainer: str = "ppo") -> tuple[float | None, list[float] | None]:
    """Per-seed (KL − cPM)/KL of ``metric`` (same trainer, β, world), mean and interval."""
    kl_name = ("" if trainer == "ppo" else f"{trainer}_") + f"kl_b{beta:g}"
    c_name = ("" if trainer == "ppo" else f"{trainer}_") + f"cpm_a{alpha:g}" + (
        "_seq" if level == "sequence" else "") + f"_b{beta:g}"
    vals, pairs = [], []
    for u in _units(result, bias):
        if (kl_name in u["results"] and c_name in u["results"] and "error" not in u["results"][kl_name]
                and "error" not in u["results"][c_name]):
            kl, c = u["results"][kl_name][metric], u["results"][c_name][metric]
            vals.append((kl - c) / kl if kl > 0 else None)
            pairs.append((u["results"][kl_name].get("instance_" + metric + "_sampled"),
                          u["results"][c_name].get("instance_" + metric + "_sampled")))
    m, ci = mean_ci(vals)
    if len(vals) == 1 and m is not None and pairs[0][0] and pairs[0][1]:
        ci = bootstrap_reduction_ci(*pairs[0])
    return m, ci


def bootstrap_reduction_ci(kl_samples: Sequence[float], cpm_samples: Sequence[float], n_boot: int = 4000,
                           seed: int = 0) -> list[float] | None:
    """95 % percentile bootstrap interval of 1 − mean(cPM)/mean(KL) over one seed's evaluation
    samples (the two runs' §6.1 instances resampled independently): the interval of a one-seed run."""
    k, c = np.asarray(kl_samples, np.float64), np.asarray(cpm_samples, np.float64)
    rng = np.random.default_rng(seed)
    mk = k[rng.integers(0, k.size, (n_boot, k.size))].mean(axis=1)
    mc = c[rng.integers(0, c.size, (n_boot, c.size))].mean(axis=1)
    ok = mk > 0
    if ok.sum() < 0.9 * n_boot:
        return None
    red = 1.0 - mc[ok] / mk[ok]
    return [float(np.quantile(red, 0.025)), float(np.quantile(red, 0.975))]


#: the reaches-theory tolerance of runs recorded before the configuration carried one
DEFAULT_TOLERANCE = 0.01
#: a Table-3 cell is resolved when its 95 % interval's half-width is at most this (percentage points)
RESOLVED_HALF_WIDTH = 10.0
#: validity every KL, cPM and DPO policy and the reference should reach (PM spreads mass by design)
VALID_TARGET = 0.95


def tolerance(result: dict) -> float:
    return float(result["config"].get("reaches_tolerance", DEFAULT_TOLERANCE))


def convergence_gap(ev: dict, metric: str = "pm_divergence_pairs") -> float | None:
    """|exact (pairwise, by default) PM divergence − the theory optimum's| of one trained run (None
    without theory); ``metric`` is the configuration's ``reaches_metric``."""
    if ev.get("theory_" + metric) is None or ev.get(metric) is None:
        return None
    return abs(ev[metric] - ev["theory_" + metric])


def reaches_metric(result: dict) -> str:
    return result["config"].get("reaches_metric", "pm_divergence_pairs")


def pairs_of(ev: dict) -> int:
    """Sampled evaluation pairs of one run (older records: half their samples)."""
    return int(ev.get("n_pairs") or ev.get("n_samples", 0) // 2)


def seeds_for_half_width(sd: float, half_width: float, most: int = 1000) -> int | None:
    """The fewest seeds n ≥ 2 whose 95 % t-interval t(0.975, n − 1)·sd/√n is at most ``half_width``."""
    from scipy.stats import t as student_t

    for n in range(2, most + 1):
        if student_t.ppf(0.975, n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    return None


def seeds_for_power(sd: float, effect: float, power: float = 0.8, most: int = 1000) -> int | None:
    """The fewest seeds n ≥ 2 at which a two-sided one-sample t-test at level 0.05 detects a mean
    ``effect`` with probability ``power`` when the per-seed sd is ``sd`` (noncentral t)."""
    from scipy.stats import nct
    from scipy.stats import t as student_t

    if sd <= 0:
        return 2
    for n in range(2, most + 1):
        crit, nc = student_t.ppf(0.975, n - 1), effect / (sd / math.sqrt(n))
        if nct.sf(crit, n - 1, nc) + nct.cdf(-crit, n - 1, nc) >= power:
            return n
    return None


def _run_name(method: str, beta: float, alpha: float | None = None, level: str = "token", trainer: str = "ppo",
              top_p: float = 1.0) -> str:
    from prefmatch.llm.opinion.config import Run

    return Run(method, beta, alpha, level if method == "cpm" else None, trainer, top_p=top_p).name


def cell_reductions(result: dict, bias: float, beta: float, alpha: float, level: str, metric: str,
                    trainer: str = "ppo", top_p: float = 1.0, converged_only: bool = True) -> dict:
    """Per seed (KL − cPM)/KL of ``metric`` on the same world, the seeds whose KL or cPM run did
    not converge (gap to the theory optimum above the tolerance) excluded with the reason when
    ``converged_only``: ``{"mean", "ci", "sd", "per_seed", "seeds", "excluded"}``."""
    kl_name = _run_name("kl", beta, trainer=trainer, top_p=top_p)
    c_name = _run_name("cpm", beta, alpha, level, trainer, top_p)
    tol = tolerance(result)
    vals, seeds, excluded = [], [], []
    for u in _units(result, bias):
        kl, c = u["results"].get(kl_name), u["results"].get(c_name)
        if kl is None or c is None:
            continue
        why = [f"{n} failed ({r['error']})" for n, r in ((kl_name, kl), (c_name, c)) if "error" in r]
        if not why and converged_only:
            for n, r in ((kl_name, kl), (c_name, c)):
                gap = convergence_gap(r, reaches_metric(result))
                if gap is not None and gap > tol:
                    why.append(f"{n} {gap:.3f} from its theory optimum (tolerance {tol:g})")
        if why:
            excluded.append({"seed": u["seed"], "reason": "; ".join(why)})
            continue
        k, v = kl.get(metric), c.get(metric)
        if k is None or v is None or not k > 0:
            continue
        vals.append((k - v) / k)
        seeds.append(u["seed"])
    m, ci = mean_ci(vals)
    if len(vals) == 1:  # one seed: a bootstrap over its evaluation samples, where the metric is sampled
        u = next(u for u in _units(result, bias) if u["seed"] == seeds[0])
        a = u["results"][kl_name].get("instance_" + metric + "_sampled")
        b = u["results"][c_name].get("instance_" + metric + "_sampled")
        if a and b:
            ci = bootstrap_reduction_ci(a, b)
    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return {"mean": m, "ci": ci, "sd": sd, "per_seed": vals, "seeds": seeds, "excluded": excluded}


def theory_reduction(result: dict, bias: float, beta: float, alpha: float, level: str, seeds: Sequence[int],
                     metric: str = "pm_divergence_exact") -> float | None:
    """Mean over ``seeds`` of the theory optima's (KL − cPM)/KL of ``metric`` at (β, α)."""
    kl_name, c_name = _run_name("kl", beta), _run_name("cpm", beta, alpha, level)
    vals = []
    for u in _units(result, bias):
        if u["seed"] not in seeds:
            continue
        k, c = u["results"].get(kl_name, {}).get("theory_" + metric), u["results"].get(c_name, {}).get("theory_" + metric)
        if k is not None and c is not None and k > 0:
            vals.append((k - c) / k)
    return float(np.mean(vals)) if vals else None


def cell_verdict(ci_pct: list[float] | None, n: int, theory_pct: float | None, paper_pct: float | None) -> tuple[str, list[str]]:
    """A Table-3 cell's verdict from its 95 % interval (percent): reduced / increased / no change
    detected, whether the interval resolves (half-width ≤ :data:`RESOLVED_HALF_WIDTH` points), and
    whether it holds the theory optimum's and the paper's reductions."""
    if ci_pct is None or n < 2:
        return f"not evaluated ({n} converged seed{'s' if n != 1 else ''})", ["not evaluated"]
    lo, hi = ci_pct
    labels = ["reduced" if lo > 0 else "increased" if hi < 0 else "no change detected"]
    hw = (hi - lo) / 2
    if hw > RESOLVED_HALF_WIDTH:
        labels.append(f"unresolved (±{hw:.0f} points)")
    if theory_pct is not None and lo <= theory_pct <= hi:
        labels.append("matches theory")
    if paper_pct is not None and lo <= paper_pct <= hi:
        labels.append("matches the paper")
    return "; ".join(labels), labels


PRIMARY = "pm_divergence_exact"


def table3(result: dict) -> dict:
    """The paper's Table 3 shape: per (β, α) and level, cPM's reduction of the PM divergence
    against KL on the same world, per seed then averaged over the seeds whose two runs converged.

    The primary metric is the exact one on valid answers (:data:`PRIMARY`: the expectation of the
    §6.1 estimator over the policy restricted to the answer set); each cell carries ``ci`` (its
    95 % t-interval in percent), ``verdict``, the sampled §6.1 reduction (all pairs and valid pairs
    only), the authors' squared error, the theory optimum's and the paper's reductions."""
    cfg = result["config"]
    bias = cfg["bias"]
    rows = {r["name"]: r for r in rows_for(result, bias)}
    cells = []
    for level in cfg["levels"]:
        for beta in cfg["betas"]:
            for alpha in cfg["alphas"]:
                name = _run_name("cpm", beta, alpha, level)
                if not rows.get(name, {}).get("n_seeds"):
                    continue
                red = cell_reductions(result, bias, beta, alpha, level, PRIMARY)
                ok = red["seeds"]

                def other(metric, conv=True):
                    r = cell_reductions(result, bias, beta, alpha, level, metric, converged_only=conv)
                    return r["mean"], r["ci"]

                m, ci = red["mean"], red["ci"]
                ms, cis = other("pm_divergence")
                mv, civ = other("pm_divergence_valid_pairs")
                mq, ciq = other("pm_squared_error")
                mqe, _ = other("pm_squared_error_exact")
                mp, cip = other("pm_divergence_pairs")
                m_all, ci_all = other(PRIMARY, conv=False)
                paper = paper_reduction(beta, alpha)
                theory = theory_reduction(result, bias, beta, alpha, level, ok)
                pct = None if ci is None else [100 * ci[0], 100 * ci[1]]
                verdict, labels = cell_verdict(pct, len(ok), None if theory is None else 100 * theory,
                                               None if paper is None else 100 * paper)
                kl_row = rows.get(_run_name("kl", beta)) if rows.get(_run_name("kl", beta), {}).get("n_seeds") else None
                ppl_ratio = (rows[name]["perplexity_heldout"] / kl_row["perplexity_heldout"]) if kl_row else None
                pk, pc = PAPER_TABLE3_PERPLEXITY.get((beta, None)), PAPER_TABLE3_PERPLEXITY.get((beta, alpha))
                cells.append({
                    "beta": beta, "alpha": alpha, "level": level, "metric": PRIMARY,
                    "reduction": m, "reduction_ci": ci, "ci": pct,
                    "half_width": None if pct is None else (pct[1] - pct[0]) / 2,
                    "resolved": bool(pct is not None and (pct[1] - pct[0]) / 2 <= RESOLVED_HALF_WIDTH),
                    "verdict": verdict, "verdicts": labels, "n_seeds": len(ok), "excluded": red["excluded"],
                    "sd": red["sd"], "theory_reduction": theory, "paper_reduction": paper,
                    "reduction_all_seeds": m_all, "reduction_all_seeds_ci": ci_all,
                    "reduction_sampled": ms, "reduction_sampled_ci": cis,
                    "reduction_sampled_valid": mv, "reduction_sampled_valid_ci": civ,
                    "reduction_squared_error": mq, "reduction_squared_error_ci": ciq,
                    "reduction_squared_error_exact": mqe,
                    "reduction_exact": m, "reduction_exact_ci": ci, "reduction_pairs": mp, "reduction_pairs_ci": cip,
                    "tokens_in_M": rows[name]["tokens_in_M"], "tokens_in_M_reference": rows[name]["tokens_in_M_reference"],
                    "valid_rate": rows[name]["valid_rate"], "perplexity_ratio": ppl_ratio,
                    "paper_perplexity_ratio": None if pk is None or pc is None else pc / pk,
                    "reduces": bool(ci is not None and ci[0] > 0),
                    "within_paper": None if ci is None or paper is None else bool(ci[0] <= paper <= ci[1]),
                })
    return {"bias": bias, "metric": "pm_divergence_exact (the §6.1 estimator's expectation over valid answers, "
            "p_reward tempered by β); the sampled §6.1 value beside it",
            "paper_model": "OPT-1.3B", "cells": cells, "tolerance": tolerance(result),
            "paper_pm_divergence": {f"{b:g}/{'KL' if a is None else f'{a:g}'}": v
                                    for (b, a), v in PAPER_TABLE3_PM_DIVERGENCE.items()}}


def nucleus_ablation(result: dict) -> list[dict]:
    """The top_p ablation (the authors' PPO samples with nucleus 0.9): per top_p < 1 and α, cPM's
    reductions against KL trained the same way (no convergence filter: nucleus sampling does not
    optimize the theory's objective), beside each run's majority preference (collapse) and its gap
    to the on-policy optimum."""
    cfg = result["config"]
    bias = cfg["bias"]
    rows = {r["name"]: r for r in rows_for(result, bias)}
    out = []
    for p in cfg.get("top_p", []):
        for alpha in [None, *cfg["alphas"]]:
            name = _run_name("kl" if alpha is None else "cpm", 1.0, alpha, top_p=p)
            base = _run_name("kl" if alpha is None else "cpm", 1.0, alpha)
            r, b = rows.get(name, {}), rows.get(base, {})
            if not r.get("n_seeds"):
                continue
            red = None if alpha is None else cell_reductions(result, bias, 1.0, alpha, "token", PRIMARY, top_p=p,
                                                             converged_only=False)
            red_s = None if alpha is None else cell_reductions(result, bias, 1.0, alpha, "token", "pm_divergence",
                                                               top_p=p, converged_only=False)
            out.append({"top_p": p, "alpha": alpha, "name": name, "majority_preference": r.get("majority_preference"),
                        "majority_preference_top_p_1": b.get("majority_preference"),
                        "rm_majority_preference": r.get("rm_majority_preference"),
                        "valid_rate": r.get("valid_rate"), "gap": None if r.get("pm_divergence_pairs") is None else
                        r["pm_divergence_pairs"] - r["theory_pm_divergence_pairs"],
                        "reduction": None if red is None else red["mean"], "reduction_ci": None if red is None else red["ci"],
                        "reduction_sampled": None if red_s is None else red_s["mean"],
                        "reduction_sampled_ci": None if red_s is None else red_s["ci"]})
    return out


def power(result: dict, t3: dict) -> dict:
    """The seeds the Table-3 cells need, from this run's per-seed spread of the primary reduction:
    the pooled sd over cells (points) and the fewest seeds for a 95 % half-width of
    :data:`RESOLVED_HALF_WIDTH` points and for 80 % power against a 20 % reduction; the worst
    cell's as well."""
    sds = [100 * c["sd"] for c in t3["cells"] if c.get("sd") is not None]
    if not sds:
        return {"sd_pooled": None, "seeds": len(_seeds(result))}
    pooled = float(math.sqrt(np.mean(np.square(sds))))
    worst = float(max(sds))
    return {"sd_pooled": pooled, "sd_worst": worst, "seeds": len(_seeds(result)),
            "seeds_half_width_10": seeds_for_half_width(pooled, RESOLVED_HALF_WIDTH),
            "seeds_half_width_10_worst": seeds_for_half_width(worst, RESOLVED_HALF_WIDTH),
            "seeds_power_20": seeds_for_power(pooled, 20.0), "seeds_power_20_worst": seeds_for_power(worst, 20.0)}


def phase_diagram(result: dict) -> dict:
    """cPM's (token level, β = 1) reduction vs KL over (reference bias, α): trained (exact metrics,
    mean and interval over seeds) and the theory optimum's curve (mean over seeds)."""
    cfg = result["config"]
    out = []
    for bias in sorted({u["bias"] for u in result["units"]}):
        units = _units(result, bias)
        ph = [u["phase"] for u in units]
        alphas = ph[0]["alpha"]
        curve = {}
        for metric in ("pm_divergence_exact", "pm_divergence_pairs"):
            red = [[(p["kl"][metric] - c) / p["kl"][metric] for c in p["cpm_token"][metric]] for p in ph]
            curve[metric] = np.mean(red, axis=0).tolist()
        curve["ref_tokens_in_M"] = np.mean([p["ref_tokens_in_M"]["token"] for p in ph], axis=0).tolist()
        points = []
        for a in cfg["alphas"]:
            if not any(f"cpm_a{a:g}_b1" in u["results"] for u in units):
                continue
            pt = {"alpha": a}
            for metric in ("pm_divergence_exact", "pm_divergence_pairs", "pm_divergence"):
                pt[metric], pt[metric + "_ci"] = reductions(result, bias, 1.0, a, "token", metric)
            for metric in ("pm_divergence_exact", "pm_divergence_pairs"):
                i = alphas.index(a) if a in alphas else None
                pt["theory_" + metric] = None if i is None else curve[metric][i]
            pt["tokens_in_M"] = mean_ci([u["results"][f"cpm_a{a:g}_b1"]["tokens_in_M"] for u in units])[0]
            pt["tokens_in_M_reference"] = mean_ci(
                [u["results"][f"cpm_a{a:g}_b1"]["tokens_in_M_reference"] for u in units])[0]
            points.append(pt)
        out.append({"bias": bias, "n_seeds": len(units), "alpha": alphas, "theory": curve, "trained": points})
    return {"beta": 1.0, "level": "token", "biases": out}


def claims(result: dict, rows: list[dict], t3: dict, phase: dict) -> list[dict]:
    """Checks with stated criteria on the main world at β = 1 (and the phase diagram).

    A claim gated on a precondition (e.g. ≥ 80 % valid answers) whose precondition fails is
    reported as ``holds: None`` with ``precondition_unmet`` — distinct from one that does not hold.
    The first claim is the reward model's: a run whose reward model is at chance (held-out
    accuracy's 95 % interval not above 0.5) reports every other claim as not evaluated."""
    by = {r["name"]: r for r in rows if r.get("n_seeds")}
    out = []
    rm = reward_model_accuracy(result)
    tol = tolerance(result)
    out.append({"id": "reward_model_above_chance", "criterion": "the reward model's held-out pairwise accuracy, "
                "pooled over seeds, has a 95 % Wilson interval above 0.5", "holds": rm["above_chance"], **rm})

    def claim(id_, criterion, holds, precondition=None, **values):
        c = {"id": id_, "criterion": criterion, "holds": None if holds is None else bool(holds), **values}
        if precondition is not None and not precondition[0]:
            c.update(holds=None, precondition_unmet=precondition[1])
        out.append(c)

    def valid(r, what):
        return (r["valid_rate"] >= 0.8, f"{what} writes {100 * r['valid_rate']:.0f} % valid answers (< 80 %)")

    kl = by.get("kl_b1")
    if kl:
        claim("kl_collapse", "KL at β = 1: majority preference exceeds the reward model's by ≥ 0.1 (precondition: "
              "≥ 80 % valid answers)", kl["majority_preference"] - kl["rm_majority_preference"] >= 0.1,
              valid(kl, "KL"), majority_preference=kl["majority_preference"],
              rm_majority_preference=kl["rm_majority_preference"], valid_rate=kl["valid_rate"])
    pm = by.get("pm_b1")
    if pm:
        claim("pm_no_collapse", "PM at β = 1: majority preference within 0.05 of the reward model's (precondition: "
              "≥ 80 % valid answers)", abs(pm["majority_preference"] - pm["rm_majority_preference"]) <= 0.05,
              valid(pm, "PM"), majority_preference=pm["majority_preference"],
              rm_majority_preference=pm["rm_majority_preference"], valid_rate=pm["valid_rate"])
    for c in t3["cells"]:
        if c["beta"] != 1.0:
            continue
        tag = f"cpm_a{c['alpha']:g}" + ("_seq" if c["level"] == "sequence" else "")
        claim(f"{tag}_reduces_pm_divergence",
              "β = 1: the 95 % interval of cPM's reduction of the exact (valid-answer) PM divergence vs KL, over "
              "the converged seeds, lies above 0 (precondition: at least 2 converged seeds)",
              c["reduces"], (c["n_seeds"] >= 2, f"{c['n_seeds']} converged seed(s)"),
              reduction=c["reduction"], reduction_ci=c["reduction_ci"], paper_reduction=c["paper_reduction"])
        r = by.get(f"{tag}_b1")
        if kl and r:
            ok = (r["valid_rate"] >= 0.8 and kl["valid_rate"] >= 0.8,
                  f"cPM or KL writes < 80 % valid answers ({100 * r['valid_rate']:.0f} %, {100 * kl['valid_rate']:.0f} %)")
            claim(f"{tag}_less_collapsed_than_kl", "β = 1: cPM's majority preference is closer to the reward "
                  "model's than KL's (precondition: both ≥ 80 % valid answers)",
                  abs(r["majority_preference"] - r["rm_majority_preference"])
                  < abs(kl["majority_preference"] - kl["rm_majority_preference"]), ok,
                  majority_preference=r["majority_preference"], valid_rate=r["valid_rate"])
            claim(f"{tag}_perplexity_within_1.5x_kl", "β = 1: held-out perplexity of cPM ≤ 1.5 × KL's",
                  r["perplexity_heldout"] <= 1.5 * kl["perplexity_heldout"],
                  perplexity_heldout=r["perplexity_heldout"], kl_perplexity_heldout=kl["perplexity_heldout"])
    cfg = result["config"]
    dkl = by.get("dpo_kl_b1")
    for a in cfg.get("dpo_alphas", []) if cfg.get("dpo") else []:
        name = f"dpo_cpm_a{a:g}_b1"
        if dkl and name in by:
            red = cell_reductions(result, cfg["bias"], 1.0, a, "token", PRIMARY, trainer="dpo", converged_only=False)
            m, ci = red["mean"], red["ci"]
            claim(f"dpo_cpm_a{a:g}_reduces_pm_divergence", "DPO at β = 1: the 95 % interval of cPM's reduction of "
                  "the exact PM divergence vs DPO-KL lies above 0 (precondition: at least 2 seeds)",
                  None if m is None else (ci[0] if ci else m) > 0, (ci is not None, "fewer than 2 seeds"),
                  reduction=m, reduction_ci=ci)
    dpm = by.get("dpo_pm_b1")
    if dpm:
        claim("dpo_pm_no_collapse", "DPO-PM at β = 1: majority preference within 0.05 of the reward model's "
              "(precondition: ≥ 80 % valid answers)",
              abs(dpm["majority_preference"] - dpm["rm_majority_preference"]) <= 0.05, valid(dpm, "DPO-PM"),
              majority_preference=dpm["majority_preference"], valid_rate=dpm["valid_rate"])
    for r in rows:
        if not r.get("n_seeds"):
            claim(f"{r['name']}_trained", "every seed of the run trains and evaluates", False, errors=r["errors"])
            continue
        metric = reaches_metric(result)
        if (r["trainer"] in ("ppo", "dpo") and r["method"] in ("kl", "cpm") and "_p0" not in r["name"]
                and r.get("theory_" + metric) is not None):
            gap = abs(r[metric] - r["theory_" + metric])
            what = "pairwise" if metric == "pm_divergence_pairs" else "policy-weighted"
            claim(f"{r['name']}_reaches_theory", f"the trained policy's exact {what} PM divergence (mean over "
                  f"seeds) is within {tol:g} of the theory optimum's for the same reward model and reference",
                  gap <= tol, gap=gap)
    agree = total = 0
    for b in phase["biases"]:
        for pt in b["trained"]:
            th = pt["theory_pm_divergence_pairs"]
            if th is None or abs(th) < 0.05 or pt["pm_divergence_pairs"] is None:
                continue
            total += 1
            agree += (pt["pm_divergence_pairs"] > 0) == (th > 0)
    if total:
        claim("phase_diagram_follows_theory", "every (bias, α) where theory's cPM optimum changes the exact pairwise "
              "PM divergence by ≥ 5 % of KL's: the trained reduction has the theory's sign",
              agree == total, agreeing_cells=agree, cells=total)
    if not rm["above_chance"]:
        for c in out[1:]:
            c.update(holds=None, not_evaluated="the reward model is at chance: no claim uses this run")
    return out


def done_criteria(result: dict, summary: dict) -> list[dict]:
    """The issue's conditions for a run that answers the paper's question, each with its value."""
    t3 = summary["table3"]["cells"]
    pol = [r for r in summary["rows"] if r["method"] in ("kl", "cpm") and r.get("n_seeds") and "_p0" not in r["name"]]
    low = min((r["valid_rate"] for r in pol), default=None)
    out = [
        ("reference ≥ 95 % valid answers", summary["reference_valid_rate"], (summary["reference_valid_rate"] or 0) >= VALID_TARGET),
        ("every KL, cPM and DPO policy ≥ 95 % valid", low, low is not None and low >= VALID_TARGET),
        ("≥ 20 held-out topic groups", summary["heldout_groups"], (summary["heldout_groups"] or 0) >= 20),
        ("≥ 1,600 evaluation pairs per run", summary["pairs_per_run"], summary["pairs_per_run"] >= 1600),
        ("reaches-theory tolerance ≤ 0.01", summary["reaches_theory_tolerance"], summary["reaches_theory_tolerance"] <= 0.01),
        ("every Table-3 cell resolved to ±10 points", sum(c["resolved"] for c in t3), bool(t3) and all(c["resolved"] for c in t3)),
    ]
    return [{"criterion": c, "value": v, "holds": bool(h)} for c, v, h in out]


def aggregate(result: dict) -> dict:
    """``{"rows", "claims", "table3", "phase", "reward_model", ...}`` of a benchmark result, with the
    fields tools read: ``reference_valid_rate``, ``heldout_groups``, ``pairs_per_run``,
    ``reaches_theory_tolerance`` and ``table3["cells"][i]["ci"]`` (percent)."""
    cfg = result["config"]
    rows = rows_for(result, cfg["bias"])
    extra = [r for b in sorted({u["bias"] for u in result["units"]}) if b != cfg["bias"] for r in rows_for(result, b)]
    t3 = table3(result)
    ph = phase_diagram(result)
    main = _units(result, cfg["bias"])
    ref = next(r for r in rows if r["method"] == "reference")
    groups = [u.get("heldout_groups") for u in main]
    trained = [pairs_of(ev) for u in main for name, ev in u["results"].items() if name != "reference" and "error" not in ev]
    rm_ = reaches_metric(result)
    gaps = [{"seed": u["seed"], "run": name, "gap": convergence_gap(ev, rm_)} for u in main
            for name, ev in u["results"].items() if name != "reference" and convergence_gap(ev, rm_) is not None]
    tol = tolerance(result)
    out = {
        "rows": [{k: r.get(k) for k in ROW_KEYS} | {k: r.get(k) for k in r if k not in ROW_KEYS}
                 for r in rows if r["method"] != "reference"],
        "reference": ref,
        "reference_valid_rate": ref.get("valid_rate"),
        "heldout_groups": None if None in groups else min(int(g) for g in groups if g is not None),
        "pairs_per_run": int(min(trained)) if trained else 0,
        "reaches_theory_tolerance": tol, "reaches_metric": rm_,
        "converged_runs": sum(g["gap"] <= tol for g in gaps), "trained_runs": len(gaps),
        "not_converged": [g for g in gaps if g["gap"] > tol],
        "phase_rows": extra,
        "claims": claims(result, rows, t3, ph),
        "table3": t3,
        "nucleus_ablation": nucleus_ablation(result),
        "power": power(result, t3),
        "phase": ph,
        "seeds": _seeds(result),
        "reward_model": {"heldout_accuracy": mean_ci([u["rm_eval_accuracy"] for u in main]),
                         "heldout_pooled": reward_model_accuracy(result),
                         "preference_error_vs_gt": mean_ci([u["rm_pref_error"] for u in main]),
                         "ranking_accuracy_heldout": mean_ci([u.get("rm_ranking_accuracy") for u in main]),
                         "malformed_below_own": mean_ci([u.get("rm_malformed_ranking", {}).get("below_own")
                                                         for u in main]),
                         "malformed_below_worst": mean_ci([u.get("rm_malformed_ranking", {}).get("below_worst")
                                                           for u in main]),
                         "malformed_below_own_by_kind": {
                             k: mean_ci([u.get("rm_malformed_ranking", {}).get("by_kind", {}).get(k) for u in main])
                             for k in MALFORMED_KINDS
                             if any(k in u.get("rm_malformed_ranking", {}).get("by_kind", {}) for u in main)}},
        "sft_majority_share": mean_ci([u["sft_majority_share"] for u in main]),
        "unit_time_s": mean_ci([u["times"]["total"] for u in main]),
        "wall_time_s": result.get("wall_time_s"),
    }
    out["done"] = done_criteria(result, out)
    return out
