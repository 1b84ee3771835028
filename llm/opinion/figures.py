"""Figures of a benchmark result (``results.json``): the PM paper's Figure 3 (p_ref vs p_reward),
Figures 5–6 (histogram and CDF of the instance PM divergence) and the phase diagram."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def make_figures(result: dict, out_dir: str | Path, prefix: str = "opinion") -> list[str]:
    """Write the figures (PNG) into ``out_dir``; returns their paths."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = result["config"]
    unit = next(u for u in result["units"] if u["bias"] == cfg["bias"])
    paths: list[str] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / f"{prefix}_{name}.png", dpi=110)
        plt.close(fig)
        paths.append(str(out / f"{prefix}_{name}.png"))

    # Figure 3: p_ref / p_reward / ground truth on the majority pairs of the held-out prompts
    panels = [("ref_pref", "(a) reference (SFT) p_ref", "C0"), ("rm_pref", "(b) reward model p_reward", "C1"),
              ("gt_pref", "(c) ground truth", "C2")]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
    bins = np.linspace(0, 1, 21)
    for a, (key, title, col) in zip(ax, panels):
        a.hist(unit["pairs"][key], bins=bins, color=col, edgecolor="k", lw=0.3)
        a.set_title(title, fontsize=10)
        a.set_xlabel("P(majority option ≻ minority option)")
    ax[0].set_ylabel("answer pairs (one topic differs)")
    fig.suptitle(f"held-out prompts, reference bias {cfg['bias']:g}, seed {unit['seed']}", fontsize=9)
    save(fig, "fig3_pref_histograms")

    # Figures 5/6: sampled instance PM divergence at β = 1
    names = [r["name"] for r in unit["runs"] if r["beta"] == 1.0 and r["trainer"] == "ppo"
             and (r["method"] != "cpm" or r["level"] == "token")]
    if names:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        allv = [v for n in names for v in unit["results"][n]["instance_pm_divergence_sampled"]]
        hb = np.linspace(0, max(allv + [1e-3]) * 1.02, 30)
        for i, n in enumerate(names):
            v = np.sort(unit["results"][n]["instance_pm_divergence_sampled"])
            ax[0].hist(v, bins=hb, alpha=0.45, label=n, color=f"C{i}")
            ax[1].plot(v, np.arange(1, v.size + 1) / v.size, label=n, color=f"C{i}")
        for a in ax:
            a.set_xlabel("instance PM divergence (sampled pair, p_reward tempered by β)")
        ax[0].set_ylabel("pairs")
        ax[1].set_ylabel("CDF")
        ax[1].legend(fontsize=7)
        fig.suptitle(f"β = 1, reference bias {cfg['bias']:g}, seed {unit['seed']}", fontsize=9)
        save(fig, "fig5_pm_divergence_hist_cdf")

    # the phase diagram
    phase = result["summary"]["phase"]["biases"]
    if phase:
        fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
        labels = {"pm_divergence_pairs": "exact pairwise PM div.", "pm_divergence_exact": "exact §6.1 PM div."}
        for j, metric in enumerate(("pm_divergence_pairs", "pm_divergence_exact")):
            a = ax[j]
            for i, b in enumerate(phase):
                a.semilogx(b["alpha"], 100 * np.asarray(b["theory"][metric]), "-", color=f"C{i}",
                           label=f"theory optimum, bias {b['bias']:g}")
                pts = [pt for pt in b["trained"] if pt[metric] is not None]
                if pts:
                    x = np.array([pt["alpha"] for pt in pts])
                    y = 100 * np.array([pt[metric] for pt in pts])
                    err = np.array([[0, 0] if pt[metric + "_ci"] is None else
                                    [pt[metric] - pt[metric + "_ci"][0], pt[metric + "_ci"][1] - pt[metric]]
                                    for pt in pts]).T * 100
                    a.errorbar(x, y, yerr=err, fmt="o", color=f"C{i}", capsize=3,
                               label=f"PPO, bias {b['bias']:g} ({b['n_seeds']} seeds)")
            a.axhline(0, color="k", lw=0.5)
            a.set_xlabel("α (token-level cPM, β = 1)")
            a.set_ylabel(f"reduction vs KL (%), {labels[metric]}")
        ax[0].legend(fontsize=7)
        save(fig, "phase_diagram")
    return paths
