r"""``prefmatch bandit run multiref-practice``: per-token ensembles and MRPO against the exact solutions.

Sweeps the comparisons of :mod:`prefmatch.theory.token_mixtures` on enumerable token worlds —
the objective each practical shortcut loses against the multi-reference paper's optimum, as a
function of how much the references disagree, the response length, the weights and K — averaged
over random instances.  The theory checks (``mref.practice.*``) prove the identities; this
experiment draws their size.  Package β.
"""
from __future__ import annotations

import numpy as np

from prefmatch.theory import token_mixtures as TM

__all__ = ["run_multiref_practice", "plot_multiref_practice"]

KEYS = ("geometric", "arithmetic", "mrpo")


def _gaps(rng, k, vocab, length, s, weights, beta, eta=None):
    cond = TM.random_token_references(rng, k, vocab, length, disagreement=s)
    r = rng.uniform(0.0, 1.0, vocab ** length)
    c = TM.compare(cond, weights, r, beta)
    out = {"geometric": c["rkl_gap_kl_form"], "arithmetic": c["fkl_gap"],
           "tv_geometric": c["tv_geometric"], "tv_arithmetic": c["tv_arithmetic"]}
    if k == 2:
        L = TM.sequence_logps(cond)
        out["mrpo"] = TM.mrpo_compare(L[0], L[1], float(weights[1]), r, beta, eta)["gap"]
    return out


def _mean(rows, key):
    vals = [row[key] for row in rows if key in row]
    return float(np.mean(vals)) if vals else None


def run_multiref_practice(seed: int = 0, progress: bool = False, instances: int | None = None, quick: bool = False) -> dict:
    """Mean objective gaps over random instances (default 20 per point; 6 with ``quick``)."""
    from prefmatch.tabular.experiments import _check, _list, _result

    m = instances if instances is not None else (6 if quick else 20)
    if m < 2:
        raise ValueError(f"instances must be >= 2, got {m!r}")
    beta, vocab = 0.5, 3
    series: dict = {"beta": beta, "instances": m}

    sweep_ids = {"s": 1, "T": 2, "a": 3, "K": 4}

    def sweep(name, points, make):
        # instance i is drawn from the same seed at every point: the curves are common-random-number differences
        rows_by_point = [[make(np.random.default_rng([seed, 2901, sweep_ids[name], i]), p) for i in range(m)] for p in points]
        keys = KEYS + ("tv_geometric", "tv_arithmetic")
        return {key: [_mean(rows, key) for rows in rows_by_point] for key in keys}

    s_grid = list(np.geomspace(0.05, 3.0, 10))
    series["disagreement"] = {"s": _list(s_grid), **sweep("s", s_grid, lambda rng, s: _gaps(rng, 2, vocab, 3, s, (0.5, 0.5), beta))}
    lengths = [1, 2, 3, 4, 5]
    series["length"] = {"T": lengths, **sweep("T", lengths, lambda rng, t: _gaps(rng, 2, 2, t, 1.0, (0.5, 0.5), beta))}
    a_grid = list(np.linspace(0.0, 1.0, 11))
    series["weight"] = {"alpha": _list(a_grid), **sweep(
        "a", a_grid, lambda rng, a: _gaps(rng, 2, vocab, 3, 1.0, (1.0 - a, a), beta) if 0 < a < 1 else
        dict.fromkeys(("geometric", "arithmetic", "tv_geometric", "tv_arithmetic"), 0.0))}
    # MRPO is undefined at α ∈ {0, 1} (one reference): there its objective is that reference's, and the gap is its own
    ks = [1, 2, 3, 4, 6]
    series["K"] = {"K": ks, **sweep("K", ks, lambda rng, k: _gaps(rng, k, vocab, 3, 1.0, tuple(np.ones(k) / k), beta))}

    d = series["disagreement"]
    slope_geo = float(np.polyfit(np.log(s_grid[:4]), np.log(d["geometric"][:4]), 1)[0])
    slope_ari = float(np.polyfit(np.log(s_grid[:4]), np.log(d["arithmetic"][:4]), 1)[0])
    series["small_s_slopes"] = {"geometric": slope_geo, "arithmetic": slope_ari}
    ln = series["length"]
    checks = [
        _check("practice.length_one_exact", max(abs(ln["geometric"][0]), abs(ln["arithmetic"][0]), abs(ln["tv_geometric"][0]),
                                                abs(ln["tv_arithmetic"][0])) <= 1e-12,
               f"T = 1: mean gaps {ln['geometric'][0]:.1e} (geometric), {ln['arithmetic'][0]:.1e} (arithmetic); the per-token "
               "ensembles are the sequence-level references"),
        _check("practice.gap_positive_beyond_length_one", all(ln[key][t] > 1e-6 for key in ("geometric", "arithmetic") for t in range(1, 5)),
               "T = 2..5: geometric " + ", ".join(f"{v:.2e}" for v in ln["geometric"][1:]) + "; arithmetic "
               + ", ".join(f"{v:.2e}" for v in ln["arithmetic"][1:])),
        _check("practice.fourth_order_in_disagreement", abs(slope_geo - 4) <= 0.3 and abs(slope_ari - 4) <= 0.3,
               f"log-log slope of the mean gap in s over s ≤ {s_grid[3]:.2f}: geometric {slope_geo:.2f}, arithmetic {slope_ari:.2f} (4 ± 0.3)"),
        _check("practice.single_reference_exact", max(abs(series["K"][key][0]) for key in ("geometric", "arithmetic")) <= 1e-12,
               "K = 1: both ensembles are the reference itself (gap "
               f"{max(abs(series['K'][key][0]) for key in ('geometric', 'arithmetic')):.1e})"),
    ]
    params = {"seed": seed, "instances": m, "beta": beta, "beta_convention": "package: E_pi[r] - beta*D",
              "world": "V^T token sequences, K references = base logits + s * noise per prefix (theory.token_mixtures)",
              "defaults": {"K": 2, "V": vocab, "T": 3, "s": 1.0, "alpha": [0.5, 0.5]},
              "gaps": {"geometric": "beta KL(pi_geo || pi*) on the multi-reference reverse-KL objective",
                       "arithmetic": "multi-reference forward-KL optimum minus the value of Algorithm 2 with the per-token mixture",
                       "mrpo": "multi-reference reverse-KL objective with weights (1-a, a): optimum minus MRPO's (unclipped)"}}
    return _result("multiref-practice", params, series, checks)


def plot_multiref_practice(res, ax_fig):
    from prefmatch.tabular.plots import GUIDE, _arr, _legend, _style

    plt, fig = ax_fig
    s = res["series"]
    axes = fig.subplots(2, 2).ravel()
    names = {"geometric": "per-token geometric ensemble (reverse KL, Algorithm 1)",
             "arithmetic": "per-token arithmetic ensemble (forward KL, Algorithm 2)",
             "mrpo": "MRPO, harmonic-mean reference (reverse KL)"}
    panels = (("disagreement", "s", "disagreement s of the references", True, "Against disagreement (T = 3, K = 2)"),
              ("length", "T", "response length T (tokens)", False, "Against length (s = 1, K = 2, V = 2)"),
              ("weight", "alpha", "weight α on reference 2", False, "Against the weights (T = 3, s = 1)"),
              ("K", "K", "number of references K (equal weights)", False, "Against K (T = 3, s = 1; MRPO is K = 2 only)"))
    for ax, (key, xkey, xlabel, loglog, title) in zip(axes, panels):
        x = _arr(s[key][xkey])
        shown = [name for name in KEYS if any(v is not None for v in s[key][name])]
        for k, name in enumerate(shown):
            y = _arr(s[key][name])
            ax.plot(x, y, label=names[name], lw=1.6, **_style(k, len(shown), len(x)))
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
            y0 = _arr(s[key]["geometric"])[0]
            ax.plot(x, y0 * (x / x[0]) ** 4, label="guide: slope 4 (gap ∝ s⁴)", **GUIDE)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("objective lost vs the exact optimum")
        ax.set_title(title)
        _legend(ax, loc="best")
    fig.suptitle(f"What per-token ensembles and MRPO lose of the multi-reference objective (package β = {s['beta']:g}, "
                 f"mean of {s['instances']} instances)")
