"""Matplotlib figures of the tabular experiments (Agg backend; drawn from the result dicts).

``plot(result, path)`` draws the figure of any experiment result (as printed by
``prefmatch bandit run NAME --json``); :func:`make_all_figures` runs every experiment at quick
sizes and writes one PNG each (the docs build and ``make demo`` call it).
"""
from __future__ import annotations

import os
import time

import numpy as np

from prefmatch.tabular.experiments import EXPERIMENTS

__all__ = ["plot", "PLOTTERS", "make_all_figures"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _arr(x):
    return np.array([np.nan if v is None else v for v in x], dtype=float)


def _diag(ax):
    ax.plot([0, 1], [0, 1], color="red", lw=1.5, label="aligned (p = p_reward)")


def plot_bias(res, ax_fig):
    plt, fig = ax_fig
    ax = fig.add_subplot(111)
    pr = _arr(res["series"]["p_reward"])
    cmap = plt.get_cmap("viridis")
    items = list(res["series"]["p_rlhf"].items())
    for k, (p_ref, ys) in enumerate(items):
        ax.plot(pr, _arr(ys), color=cmap(k / max(len(items) - 1, 1)), label=f"p_ref = {p_ref}")
    _diag(ax)
    ax.set_xlabel("reward model preference on y,  p_reward(y)")
    ax.set_ylabel("KL-RLHF preference on y,  p_rlhf(y)")
    ax.set_title(f"PM paper Fig. 2: algorithmic bias of KL-RLHF (β = {res['params']['beta']:g})")
    ax.legend(fontsize=7, ncol=2)


def _preference_curves(ax_fig, res, key, label, ylabel, title):
    """One curve per entry of ``res["series"][key]`` against p_reward, the diagonal, the labels."""
    plt, fig = ax_fig
    ax = fig.add_subplot(111)
    pr = _arr(res["series"]["p_reward"])
    for k, ys in res["series"][key].items():
        ax.plot(pr, _arr(ys), label=label.format(k))
    _diag(ax)
    ax.set_xlabel("reward model preference on y,  p_reward(y)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_beta_bias(res, ax_fig):
    ax = _preference_curves(ax_fig, res, "p_rlhf", "β = {}", "KL-RLHF preference on y,  p_rlhf(y)",
                            "PM paper Fig. 9: bias from β (uniform reference)")
    ax.axvline(0.7, color="gray", ls=":", lw=1)
    ax.axhline(0.99, color="gray", ls=":", lw=1)


def plot_collapse(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    z = _arr(s["logit_p_ref"])
    finite = np.isfinite(z) & (np.abs(z) < 1e300)
    methods = [k for k in s if k in ("kl", "pm") or k.startswith("cpm")]
    axes = fig.subplots(1, len(s["p_reward"]), sharey=True)
    for ax, prw in zip(np.atleast_1d(axes), s["p_reward"]):
        key = f"{prw:g}"
        for m in methods:
            ax.plot(z[finite], _arr(s[m][key])[finite], label=m, lw=1.5, ls="--" if m.startswith("cpm") else "-")
        ax.axhline(prw, color="red", lw=1, ls=":")
        ax.set_xlabel("logit p_ref(y)")
        ax.set_title(f"p_reward(y) = {prw:g}", fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("aligned preference on y")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("PM paper Sec. 5.2 (cf. Fig. 2): preference collapse as p_ref → 0 / 1")


def plot_fdiv_bias(res, ax_fig):
    _preference_curves(ax_fig, res, "p_f", "f = {}", "f-RLHF preference on y,  p_f(y)",
                       "PM paper eq. (5.3): f-divergence RLHF bias (β = 1, uniform reference)")


def plot_conditional_pm(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    alphas = s["alpha"]
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(alphas))
    for k, m in enumerate(("cpm", "pm", "kl")):
        ax1.bar(x + (k - 1) * 0.27, _arr(s["mass_on_M"][m]), 0.27, label=m)
        ax2.bar(x + (k - 1) * 0.27, np.nan_to_num(np.abs(_arr(s["pm_divergence_on_M"][m]))), 0.27, label=m)
    for ax in (ax1, ax2):
        ax.set_xticks(x, [f"α = {a:g}" for a in alphas])
        ax.set_xlabel("cPM threshold α  (M = {π_ref ≥ α})")
    ax1.set_ylabel("policy mass on M")
    ax2.set_ylabel("mean PM divergence on pairs in M")
    ax1.legend(fontsize=8)
    fig.suptitle("PM paper Thm 4: conditional PM matches preferences on M; KL does not")


def plot_multi_reference(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    ax1, ax2 = fig.subplots(1, 2)
    sw = s["weight_sweep"]
    w = _arr(sw["w"])
    for k, lab in (("rkl", "V_RKL (Thm 5.2)"), ("mrpo", "MRPO lower bound"), ("holder", "Hölder upper bound"),
                   ("fkl", "V_FKL (Thm 6.2)"), ("corollary_c1", "Cor. C.1 upper bound")):
        ax1.plot(w, _arr(sw[k]), label=lab, ls="--" if k in ("mrpo", "holder", "corollary_c1") else "-")
    ax1.set_xlabel("weight α_1 on reference 1 (α_2 = 1 − α_1)")
    ax1.set_ylabel("optimal value (prompt 0)")
    ax1.legend(fontsize=7)
    p0 = s["prompt0"]
    n = len(p0["reward"])
    x = np.arange(n)
    bars = [(f"π_ref,{i + 1}", r) for i, r in enumerate(p0["refs"])] + [
        ("escort π̂_α", p0["escort"]), ("mixture π̄_α", p0["mixture"]), ("π*_RKL", p0["pi_rkl"]), ("π*_FKL", p0["pi_fkl"])]
    wdt = 0.8 / len(bars)
    for k, (lab, ys) in enumerate(bars):
        ax2.bar(x + (k - len(bars) / 2) * wdt, _arr(ys), wdt, label=lab)
    ax2.set_xlabel("response y")
    ax2.set_ylabel("probability")
    ax2.legend(fontsize=6)
    fig.suptitle(f"MRef paper Secs. 5–6: reverse vs forward KL to K = {len(p0['refs'])} references (β = {s['beta']:g})")


def plot_bt_mle(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    n = _arr(s["n"])
    ax1, ax2 = fig.subplots(1, 2)
    rmse = _arr(s["rmse"])
    ax1.loglog(n, rmse, "o-", label=f"tabular MLE, slope {s['slope']['slope']:.3f}")
    ax1.loglog(n, rmse[0] * np.sqrt(n[0] / n), "k:", label="∝ 1/√n")
    ax1.set_xlabel("number of comparisons n")
    ax1.set_ylabel("RMS of √E(Δ(y) − Δ(y′))²")
    ax1.legend(fontsize=8)
    ax2.semilogx(n, _arr(s["p_finite_class_correct"]), "o-")
    ax2.set_xlabel("number of comparisons n")
    ax2.set_ylabel("P(finite-class MLE = r*)")
    fig.suptitle("PM paper App. A.2: BT maximum likelihood from counts")


def plot_sample_complexity(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    n = _arr(s["n"])
    axes = fig.subplots(2, 2).ravel()
    q = res["params"]["quantile"]
    for ax, key in zip(axes, ("rkl_optimality", "rkl_suboptimality", "fkl_optimality", "fkl_suboptimality")):
        d = s[key]
        sl = s["slopes"][key]
        ax.loglog(n, _arr(d["quantile"]), "o-", label=f"{q:g}-quantile, slope {sl['slope']:.2f} [{sl['ci'][0]:.2f}, {sl['ci'][1]:.2f}]")
        ax.loglog(n, _arr(d["mean_abs"]), "s--", label="mean |gap|")
        ax.loglog(n, _arr(d["bound"]), "k-", lw=1, label=f"bound ({d['bound_source']})")
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.set_xlabel("number of comparisons n")
        ax.set_ylabel("gap")
        ax.legend(fontsize=6)
    fig.suptitle("MRef paper Thms 5.5–6.5: measured gaps vs n against the bounds")


PLOTTERS = {
    "bias": plot_bias,
    "beta-bias": plot_beta_bias,
    "collapse": plot_collapse,
    "fdiv-bias": plot_fdiv_bias,
    "conditional-pm": plot_conditional_pm,
    "multi-reference": plot_multi_reference,
    "bt-mle": plot_bt_mle,
    "sample-complexity": plot_sample_complexity,
}

_SIZES = {"bias": (6, 5), "beta-bias": (6, 5), "fdiv-bias": (6, 5), "collapse": (12, 4),
          "conditional-pm": (10, 4), "multi-reference": (12, 4.5), "bt-mle": (10, 4), "sample-complexity": (10, 8)}


def plot(result: dict, path: str) -> str:
    """Draw the figure of ``result`` (an experiment dict) into ``path`` (format from the suffix)."""
    plt = _plt()
    name = result["experiment"]
    fig = plt.figure(figsize=_SIZES.get(name, (8, 5)))
    try:
        PLOTTERS[name](result, (plt, fig))
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def make_all_figures(outdir: str, seed: int = 0, quick: bool = True) -> list[str]:
    """Run every experiment (``sample-complexity`` at quick sizes) and write ``outdir/NAME.png``.

    Returns the paths written; takes a few seconds in all.
    """
    os.makedirs(outdir, exist_ok=True)
    paths = []
    for name, exp in EXPERIMENTS.items():
        kw = {"quick": True} if (quick and name == "sample-complexity") else {}
        res = exp.run(seed=seed, **kw)
        paths.append(plot(res, os.path.join(outdir, f"{name}.png")))
    return paths


if __name__ == "__main__":  # pragma: no cover
    import sys

    t = time.time()
    for p in make_all_figures(sys.argv[1] if len(sys.argv) > 1 else "out/figures"):
        print(p)
    print(f"{time.time() - t:.1f} s")
