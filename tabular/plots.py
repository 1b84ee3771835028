"""Matplotlib figures of the tabular experiments (Agg backend; drawn from the result dicts).

``plot(result, path)`` draws the figure of any experiment result (as printed by
``prefmatch bandit run NAME --json``); :func:`figure` returns the open figure (for tests);
:func:`make_all_figures` runs every experiment at quick sizes and writes one PNG each (the docs
build and ``make demo`` call it).

Conventions every figure follows (``tests/tabular/test_experiments.py`` checks them): a
colour-blind-safe palette with no colour used twice in one panel, a marker per series, human
names in the legends (never a result key such as ``cpm_alpha=0.01``), every guide line in the
legend, a legend note on any curve that coincides with another, fonts of at least 9 pt and
axes limited to where the curves change.
"""
from __future__ import annotations

import os
import time

import numpy as np

from prefmatch.tabular.experiments import EXPERIMENTS

__all__ = ["plot", "figure", "PLOTTERS", "make_all_figures", "SERIES_NAMES", "PALETTE"]

# Okabe–Ito (colour-blind safe) without black, which is kept for the reference ("aligned") line
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#7F3C8D")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
GUIDE = dict(color="0.45", ls=":", lw=1.3)
ALIGNED = dict(color="black", ls="--", lw=1.5)
FONT = {"font.size": 10, "legend.fontsize": 9, "axes.titlesize": 10.5, "axes.labelsize": 10,
        "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 11.5}

# result keys -> what a reader calls them
SERIES_NAMES = {
    "kl": "KL-RLHF",
    "pm": "PM-RLHF",
    "cpm": "conditional PM",
    "reverse_kl": "reverse KL",
    "chi2": "χ²",
    "hellinger": "squared Hellinger",
    "js": "Jensen–Shannon",
    "rkl_optimality": "reverse KL: optimality gap",
    "rkl_suboptimality": "reverse KL: sub-optimality gap",
    "fkl_optimality": "forward KL: optimality gap",
    "fkl_suboptimality": "forward KL: sub-optimality gap",
}
_F_NAMES = {"kl": "KL (f = u log u)", "reverse_kl": "reverse KL (f = −log u)", "chi2": "χ² (f = (u − 1)²)",
            "hellinger": "squared Hellinger (f = (√u − 1)²)", "js": "Jensen–Shannon"}
_GAP_LABELS = {
    "optimality": r"optimality gap  $J(\pi^*) - J(\hat\pi)$,  $J = \mathbb{E}_\pi[r^*]$",
    "suboptimality": r"sub-optimality gap  $\mathcal{J}(\pi^*) - \mathcal{J}(\hat\pi)$",
}
_COINCIDE_TOL = 1e-6


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _arr(x):
    return np.array([np.nan if v is None else v for v in x], dtype=float)


def _style(k: int, n: int, npoints: int) -> dict:
    """Colour, marker and staggered marker positions of series k of n."""
    step = max(1, npoints // 8)
    return dict(color=PALETTE[k % len(PALETTE)], marker=MARKERS[k % len(MARKERS)], ms=5,
                markevery=(min(k * step // max(n, 1), step - 1), step))


def _coincides(y, ref) -> bool:
    y, ref = np.asarray(y, float), np.asarray(ref, float)
    ok = np.isfinite(y) & np.isfinite(ref)
    return bool(ok.any()) and float(np.max(np.abs(y[ok] - ref[ok]))) <= _COINCIDE_TOL


def _diag(ax):
    # on top: a curve that coincides with it stays visible through the dashes
    ax.plot([0, 1], [0, 1], zorder=5, label=r"aligned: $p = p_{\mathrm{reward}}$ (preference matching)", **ALIGNED)


def _legend(ax, **kw):
    kw.setdefault("fontsize", 9)
    kw.setdefault("framealpha", 0.9)
    return ax.legend(**kw)


def plot_bias(res, ax_fig):
    plt, fig = ax_fig
    ax = fig.add_subplot(111)
    pr = _arr(res["series"]["p_reward"])
    cmap = plt.get_cmap("viridis")
    items = list(res["series"]["p_rlhf"].items())
    step = max(1, len(pr) // 8)
    _diag(ax)
    for k, (p_ref, ys) in enumerate(items):
        y = _arr(ys)
        note = "  (coincides with aligned)" if _coincides(y, pr) else ""
        ax.plot(pr, y, color=cmap(0.9 * k / max(len(items) - 1, 1)), marker=MARKERS[k % len(MARKERS)],
                ms=4.5, markevery=(k * step // len(items), step), lw=1.6,
                label=rf"$p_{{\mathrm{{ref}}}}(y)$ = {float(p_ref):g}{note}", zorder=2 + (1 if note else 0))
    ax.set_xlabel(r"reward model's preference for y,  $p_{\mathrm{reward}}(y)$")
    ax.set_ylabel(r"KL-RLHF policy's preference for y,  $p_{\mathrm{rlhf}}(y)$")
    ax.set_title(f"Algorithmic bias of KL-RLHF, β = {res['params']['beta']:g}\n(PM paper, Fig. 2)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=9)


def _preference_curves(ax_fig, res, key, names, ylabel, title):
    """One curve per entry of ``res["series"][key]`` against p_reward, the diagonal, the labels."""
    plt, fig = ax_fig
    ax = fig.add_subplot(111)
    pr = _arr(res["series"]["p_reward"])
    _diag(ax)
    items = list(res["series"][key].items())
    for k, (name, ys) in enumerate(items):
        y = _arr(ys)
        note = "  (coincides with aligned)" if _coincides(y, pr) else ""
        ax.plot(pr, y, lw=1.6, label=names(name) + note, zorder=3 if note else 2,
                **_style(k, len(items), len(pr)))
    ax.set_xlabel(r"reward model's preference for y,  $p_{\mathrm{reward}}(y)$")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax


def plot_beta_bias(res, ax_fig):
    ax = _preference_curves(ax_fig, res, "p_rlhf", lambda b: f"β = {float(b):g}",
                            r"KL-RLHF policy's preference for y,  $p_{\mathrm{rlhf}}(y)$",
                            "Bias from β, uniform reference\n(PM paper, Fig. 9 and App. A.3)")
    ax.axvline(0.7, label=r"$p_{\mathrm{reward}} = 0.7$ and $p_{\mathrm{rlhf}} = 0.99$" "\n(App. A.3's example, β = 0.1)", **GUIDE)
    ax.axhline(0.99, **GUIDE)
    _legend(ax, loc="lower right")


def plot_collapse(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    z = _arr(s["logit_p_ref"])
    finite = np.isfinite(z) & (np.abs(z) < 1e300)
    alphas = [float(a) for a in res["params"].get("alpha", [])]
    methods = [k for k in s if k in ("kl", "pm") or k.startswith("cpm")]

    def name(m):
        if m.startswith("cpm"):
            return f"conditional PM, α = {float(m.split('=', 1)[1]):g}"
        return SERIES_NAMES.get(m, m)

    # where something happens: the curves leave their limits, and the α thresholds
    active = np.zeros_like(z, dtype=bool)
    for m in methods:
        for prw in s["p_reward"]:
            y = _arr(s[m][f"{prw:g}"])
            lo, hi = y[finite][0], y[finite][-1]
            active |= finite & (np.abs(y - lo) > 1e-3) & (np.abs(y - hi) > 1e-3)
    zt = [float(np.log(a / (1 - a))) for a in alphas if 0 < a < 1]
    lo = min([*z[active], *zt]) if active.any() else -6.0
    hi = max([*z[active], *zt]) if active.any() else 6.0
    lim = max(abs(lo), abs(hi)) + 1.0

    visible = int(np.sum(finite & (np.abs(z) <= lim)))
    axes = np.atleast_1d(fig.subplots(1, len(s["p_reward"]), sharey=True))
    for ax, prw in zip(axes, s["p_reward"]):
        key = f"{prw:g}"
        ax.axhline(prw, label=r"$p_{\mathrm{reward}}(y)$ (preference matching)", zorder=5, **ALIGNED)
        for k, m in enumerate(methods):
            y = _arr(s[m][key])[finite]
            note = r"  (coincides with $p_{\mathrm{reward}}$)" if _coincides(y, np.full_like(y, prw)) else ""
            ax.plot(z[finite], y, lw=1.8 if k == 0 else 1.4, ls=("-", "--", "-.", ":")[k % 4],
                    label=name(m) + note, zorder=2 + k, **_style(k, len(methods), visible))
        for k, (a, t) in enumerate(zip(alphas, zt)):
            c = PALETTE[(len(methods) + k) % len(PALETTE)]
            ax.axvline(t, label=rf"$p_{{\mathrm{{ref}}}}(y)$ = α or 1 − α, α = {a:g} (edges of M)", color=c,
                       ls=(0, (1, 2)), lw=1.1, zorder=0)
            ax.axvline(-t, color=c, ls=(0, (1, 2)), lw=1.1, zorder=0)
        ax.set_xlim(-lim, lim)
        ax.set_xlabel(r"reference log-odds of y,  logit $p_{\mathrm{ref}}(y)$")
        ax.set_title(rf"$p_{{\mathrm{{reward}}}}(y)$ = {prw:g}")
    axes[0].set_ylabel("aligned model's preference for y")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9,
               title=r"conditional PM equals $p_{\mathrm{reward}}$ while both responses are in M (α ≤ $p_{\mathrm{ref}}(y)$ ≤ 1 − α) "
                     "and collapses like KL-RLHF outside; overlapping curves are drawn with markers",
               title_fontsize=9)
    fig.suptitle(r"Preference collapse as $p_{\mathrm{ref}}$ → 0 or 1 (PM paper, Sec. 5.2), β = 1")


def plot_fdiv_bias(res, ax_fig):
    ax = _preference_curves(ax_fig, res, "p_f", lambda f: _F_NAMES.get(f, f),
                            r"f-RLHF policy's preference for y,  $p_f(y)$",
                            "f-divergence RLHF optima, β = 1, uniform reference\n(PM paper, eq. (5.3))")
    _legend(ax, loc="upper left")


def plot_conditional_pm(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    alphas = s["alpha"]
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(alphas))
    names = {"cpm": "conditional PM", "pm": "PM-RLHF", "kl": "KL-RLHF"}
    hatches = ("", "//", "..")
    w = 0.27
    div = {m: _arr(s["pm_divergence_on_M"][m]) for m in names}
    top = np.nanmax([np.nanmax(np.abs(v)) if np.isfinite(v).any() else 0 for v in div.values()]) or 1.0
    for k, m in enumerate(names):
        xs = x + (k - 1) * w
        ax1.bar(xs, _arr(s["mass_on_M"][m]), w, label=names[m], color=PALETTE[k], hatch=hatches[k],
                edgecolor="black", lw=0.6)
        d = np.abs(div[m])
        ax2.bar(xs, np.nan_to_num(d), w, label=names[m], color=PALETTE[k], hatch=hatches[k],
                edgecolor="black", lw=0.6)
        for xi, di in zip(xs, d):
            if np.isfinite(di) and di < 1e-3 * top:  # a zero bar is invisible: say so
                ax2.annotate("0", (xi, 0), xytext=(0, 3), textcoords="offset points", ha="center",
                             fontsize=9, color=PALETTE[k], fontweight="bold")
    for xi, pairs in zip(x, s.get("pairs_in_M", [None] * len(x))):
        if pairs == 0:
            ax2.annotate("no pair of\nresponses in M", (xi, 0.5 * top), ha="center", fontsize=9, color="0.3")
    for ax in (ax1, ax2):
        ax.set_xticks(x, [f"α = {a:g}" for a in alphas])
        ax.set_xlabel(r"threshold α of M = {y : $\pi_{\mathrm{ref}}(y)$ ≥ α}")
        _legend(ax, loc="upper right")
    ax1.set_ylabel("policy mass on M (mean over prompts)")
    ax2.set_ylabel("mean PM divergence on pairs in M")
    ax2.set_ylim(0, 1.25 * top)
    ax1.set_title("How much of the policy lies on M")
    ax2.set_title("Preference mismatch on M (0 = matched)")
    fig.suptitle("Conditional PM matches preferences on M; KL-RLHF does not (PM paper, Thm 4)")


def plot_multi_reference(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    ax1, ax2 = fig.subplots(1, 2)
    sw = s["weight_sweep"]
    w = _arr(sw["w"])
    vr, vf = r"$V_{\mathrm{RKL}}$", r"$V_{\mathrm{FKL}}$"
    lines = (("rkl", f"{vr}, reverse KL (Thm 5.2)"), ("mrpo", f"MRPO lower bound on {vr}"),
             ("holder", f"Hölder upper bound on {vr}"), ("fkl", f"{vf}, forward KL (Thm 6.2)"),
             ("corollary_c1", f"Cor. C.1 upper bound on {vf}"))
    for k, (key, lab) in enumerate(lines):
        ax1.plot(w, _arr(sw[key]), label=lab, lw=1.6,
                 ls="--" if key in ("mrpo", "holder", "corollary_c1") else "-", **_style(k, len(lines), len(w)))
    ax1.set_xlabel("weight α₁ on reference 1 (α₂ = 1 − α₁)")
    ax1.set_ylabel("optimal value (prompt 0)")
    ax1.set_title("Optimal values and their bounds")
    _legend(ax1, loc="best")
    p0 = s["prompt0"]
    n = len(p0["reward"])
    x = np.arange(n)
    bars = [(rf"reference $\pi_{{\mathrm{{ref}},{i + 1}}}$", r) for i, r in enumerate(p0["refs"])] + [
        (r"escort $\hat\pi_\alpha$", p0["escort"]), (r"mixture $\bar\pi_\alpha$", p0["mixture"]),
        (r"$\pi^*_{\mathrm{RKL}}$ (reverse KL)", p0["pi_rkl"]), (r"$\pi^*_{\mathrm{FKL}}$ (forward KL)", p0["pi_fkl"])]
    wdt = 0.8 / len(bars)
    for k, (lab, ys) in enumerate(bars):
        ax2.bar(x + (k - len(bars) / 2 + 0.5) * wdt, _arr(ys), wdt, label=lab, color=PALETTE[k % len(PALETTE)],
                edgecolor="black", lw=0.4)
    ax2.set_xticks(x)
    ax2.set_xlabel("response y")
    ax2.set_ylabel("probability")
    ax2.set_title("References, their mixtures and the two optima (prompt 0)")
    _legend(ax2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"Reverse vs forward KL to K = {len(p0['refs'])} references, β = {s['beta']:g} "
                 "(multi-reference paper, Secs. 5–6)")


def plot_bt_mle(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    n = _arr(s["n"])
    ax1, ax2 = fig.subplots(1, 2)
    rmse = _arr(s["rmse"])
    ax1.loglog(n, rmse, "o-", color=PALETTE[0], label=f"tabular MLE, fitted slope {s['slope']['slope']:.3f}")
    ax1.loglog(n, rmse[0] * np.sqrt(n[0] / n), label="reference slope: ∝ 1/√n", **GUIDE)
    ax1.set_xlabel("number of comparisons n")
    ax1.set_ylabel("RMS error of reward differences Δ(y) − Δ(y′)")
    ax1.set_title("Error of the BT maximum-likelihood reward")
    _legend(ax1)
    ax2.semilogx(n, _arr(s["p_finite_class_correct"]), "s-", color=PALETTE[1], label="finite-class MLE")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_xlabel("number of comparisons n")
    ax2.set_ylabel("P(finite-class MLE = r*)")
    ax2.set_title("Finite reward class: the MLE finds r*")
    _legend(ax2, loc="lower right")
    fig.suptitle("Bradley–Terry maximum likelihood from counts (PM paper, App. A.2)")


def plot_sample_complexity(res, ax_fig):
    plt, fig = ax_fig
    s = res["series"]
    n = _arr(s["n"])
    axes = fig.subplots(2, 2).ravel()
    q = res["params"]["quantile"]
    for ax, key in zip(axes, ("rkl_optimality", "rkl_suboptimality", "fkl_optimality", "fkl_suboptimality")):
        d = s[key]
        sl = s["slopes"][key]
        ax.loglog(n, _arr(d["quantile"]), "o-", color=PALETTE[0],
                  label=f"{q:g}-quantile of the gap, slope {sl['slope']:.2f} [{sl['ci'][0]:.2f}, {sl['ci'][1]:.2f}]")
        ax.loglog(n, _arr(d["mean_abs"]), "s--", color=PALETTE[1], label="mean |gap|")
        ax.loglog(n, _arr(d["bound"]), "^-", color=PALETTE[2], lw=1.2, label=f"bound ({d['bound_source']})")
        ax.set_title(SERIES_NAMES[key])
        ax.set_xlabel("number of comparisons n")
        ax.set_ylabel(_GAP_LABELS[key.split("_", 1)[1]])
        low = np.nanmin(np.concatenate([_arr(d["quantile"]), _arr(d["mean_abs"])]))
        if np.isfinite(low) and low > 0:  # room under the curves for the legend
            ax.set_ylim(bottom=low / 60)
        _legend(ax, loc="lower left")
    fig.suptitle("Measured gaps against the sample-complexity bounds (multi-reference paper, "
                 "Thms 5.5–6.5)")


PLOTTERS = {
    "bias": plot_bias,
    "beta-bias": plot_beta_bias,
    "collapse": plot_collapse,
    "fdiv-bias": plot_fdiv_bias,
    "conditional-pm": plot_conditional_pm,
    "multi-reference": plot_multi_reference,
    "bt-mle": plot_bt_mle,
    "sample-complexity": plot_sample_complexity,
    "multiref-practice": lambda res, ax_fig: _multiref_practice_plot(res, ax_fig),
}


def _multiref_practice_plot(res, ax_fig):
    from prefmatch.tabular.multiref_practice import plot_multiref_practice

    return plot_multiref_practice(res, ax_fig)

_SIZES = {"bias": (7, 6.8), "beta-bias": (6.5, 5.5), "fdiv-bias": (6.5, 5.5), "collapse": (13, 5.2),
          "conditional-pm": (11, 4.6), "multi-reference": (14, 5), "bt-mle": (11, 4.4),
          "sample-complexity": (12, 9), "multiref-practice": (13, 9)}


def figure(result: dict):
    """The open matplotlib figure of ``result`` (an experiment dict); the caller closes it."""
    plt = _plt()
    name = result["experiment"]
    with plt.rc_context(FONT):
        fig = plt.figure(figsize=_SIZES.get(name, (8, 5)), layout="constrained")
        try:
            PLOTTERS[name](result, (plt, fig))
        except BaseException:
            plt.close(fig)
            raise
    return fig


def plot(result: dict, path: str) -> str:
    """Draw the figure of ``result`` (an experiment dict) into ``path`` (format from the suffix)."""
    plt = _plt()
    fig = figure(result)
    try:
        with plt.rc_context(FONT):
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
