"""Every experiment runs with passing checks; JSON schema; figures."""
import json
import math
import re

import numpy as np
import pytest

from prefmatch.tabular.experiments import EXPERIMENTS, bootstrap_slope, loglog_slope, run_experiment

SMALL = {
    "bt-mle": dict(trials=60, n_list=(100, 1000, 10000, 100000)),
    "sample-complexity": dict(quick=True, trials=200, n_boot=100),
}


def _no_nan(obj):
    if isinstance(obj, float):
        assert math.isfinite(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _no_nan(v)
    elif isinstance(obj, list):
        for v in obj:
            _no_nan(v)


@pytest.fixture(scope="module")
def results():
    return {name: run_experiment(name, seed=0, **SMALL.get(name, {})) for name in EXPERIMENTS}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_checks_pass_and_schema(results, name):
    res = results[name]
    assert list(res) == ["experiment", "params", "series", "checks"]
    assert res["experiment"] == name
    assert res["checks"], "every experiment has checks"
    for c in res["checks"]:
        assert set(c) == {"id", "passed", "detail"}
        assert c["passed"], c
    json.loads(json.dumps(res, allow_nan=False))
    _no_nan({k: v for k, v in res["series"].items() if k != "pm_divergence_on_M"})


def test_sample_complexity_slopes_and_bounds(results):
    s = results["sample-complexity"]["series"]
    assert set(s["slopes"]) == {"rkl_optimality", "rkl_suboptimality", "fkl_optimality", "fkl_suboptimality"}
    assert s["bound_holds"] is True
    for v in s["slopes"].values():
        assert set(v) == {"slope", "ci"} and v["ci"][0] <= v["slope"] <= v["ci"][1]
    # predicted rates: RKL optimality ≈ −1/2, RKL sub-optimality ≈ −1 (tolerance ±0.25 at quick sizes)
    assert abs(s["slopes"]["rkl_optimality"]["slope"] + 0.5) <= 0.25
    assert abs(s["slopes"]["rkl_suboptimality"]["slope"] + 1.0) <= 0.25


def test_slope_helpers():
    import numpy as np

    n = np.array([10, 100, 1000])
    assert abs(loglog_slope(n, 3.0 / n) + 1) <= 1e-12
    rng = np.random.default_rng(0)
    samples = (1 / np.sqrt(n))[:, None] * rng.uniform(0.5, 1.5, size=(3, 500))
    slope, ci = bootstrap_slope(rng, n, samples, lambda x, axis: np.quantile(x, 0.9, axis=axis), n_boot=200)
    assert ci[0] <= -0.5 <= ci[1] and abs(slope + 0.5) < 0.05


def test_figures(tmp_path, results):
    from prefmatch.tabular.plots import plot

    for name, res in results.items():
        path = plot(res, str(tmp_path / f"{name}.png"))
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- readable figures
_CODE_NAME = re.compile(r"[A-Za-z0-9]_[A-Za-z0-9]|\w=")  # cpm_alpha=0.01, p_ref, beta=1


def _plain(label: str) -> str:
    """A legend label without its mathtext ($...$) parts."""
    return re.sub(r"\$[^$]*\$", "", label)


def _series(ax):
    """(label, colour, artist kind, y data or None) of every labelled series and guide in ax."""
    import matplotlib.colors as mcolors
    from matplotlib.container import BarContainer

    out = []
    for line in ax.get_lines():
        lab = line.get_label()
        out.append((lab, mcolors.to_rgb(line.get_color()), "line", np.asarray(line.get_ydata(), float)))
    for cont in ax.containers:
        if isinstance(cont, BarContainer) and cont.patches:
            out.append((cont.get_label(), mcolors.to_rgb(cont.patches[0].get_facecolor()), "bar", None))
    return out


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_figure_is_readable(results, name):
    """Human names in the legends, every series and guide line in a legend, no two series of a
    panel in one colour, legends of at least 9 pt, titles inside the figure, no curve hidden under
    another without a note, no bare "gap" axis label."""
    import matplotlib.colors as mcolors

    from prefmatch.tabular.plots import SERIES_NAMES, figure

    plt = pytest.importorskip("matplotlib.pyplot")
    fig = figure(results[name])
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [lg for ax in fig.axes for lg in ([ax.get_legend()] if ax.get_legend() else [])]
        legends += list(fig.legends)
        assert legends, "the figure has no legend"
        in_legend = set()
        for lg in legends:
            for t in lg.get_texts():
                label = t.get_text()
                in_legend.add(label)
                assert t.get_fontsize() >= 9, f"legend entry {label!r} at {t.get_fontsize()} pt"
                assert not _CODE_NAME.search(_plain(label)), f"code name in the legend: {label!r}"
                assert label not in SERIES_NAMES, f"result key {label!r} instead of its name"
        for ax in fig.axes:
            series = _series(ax)
            for lab, _, kind, _ in series:
                if not lab.startswith("_"):
                    assert lab in in_legend, f"{kind} {lab!r} is not in a legend"
            for line in ax.get_lines():  # a guide line without a label would be unexplained
                if line.get_label().startswith("_"):
                    twin = [other for other in ax.get_lines() if other is not line
                            and not other.get_label().startswith("_")
                            and mcolors.to_rgb(other.get_color()) == mcolors.to_rgb(line.get_color())
                            and other.get_linestyle() == line.get_linestyle()]
                    assert twin, f"an unlabelled line in {ax.get_title()!r}"
            named = [(lab, c) for lab, c, _, _ in series if not lab.startswith("_")]
            for i in range(len(named)):
                for j in range(i + 1, len(named)):
                    d = float(np.linalg.norm(np.subtract(named[i][1], named[j][1])))
                    assert d > 0.1, f"{named[i][0]!r} and {named[j][0]!r} share a colour in {ax.get_title()!r}"
            lines = [(lab, y) for lab, _, kind, y in series if kind == "line" and not lab.startswith("_")]
            for i in range(len(lines)):
                for j in range(i + 1, len(lines)):
                    (la, ya), (lb, yb) = lines[i], lines[j]
                    if ya.shape == yb.shape and ya.size > 2 and np.allclose(ya, yb, atol=1e-6, equal_nan=True):
                        assert any(w in la + lb for w in ("coincides", "=")), \
                            f"{la!r} hides {lb!r} without a note"
            ylabels = {a.get_ylabel().strip().lower() for a in ax.get_shared_y_axes().get_siblings(ax)}
            ylabels.discard("")  # a panel sharing its y axis carries the label once
            assert ylabels and not ylabels & {"gap"}, f"axis label {ax.get_ylabel()!r} in {ax.get_title()!r}"
        box = fig.bbox
        texts = [ax.title for ax in fig.axes] + ([fig._suptitle] if fig._suptitle else [])
        texts += [lg.get_window_extent(renderer) for lg in legends]
        for t in texts:
            ext = t if not hasattr(t, "get_window_extent") else t.get_window_extent(renderer)
            assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1 and ext.y1 <= box.y1 + 1, \
                f"cut off: {getattr(t, 'get_text', lambda: 'a legend')()!r}"
    finally:
        plt.close(fig)


def test_collapse_axis_shows_where_things_happen(results):
    """The collapse figure's x range covers where the curves change, not the whole ±40 sweep."""
    from prefmatch.tabular.plots import figure

    plt = pytest.importorskip("matplotlib.pyplot")
    fig = figure(results["collapse"])
    try:
        lo, hi = fig.axes[0].get_xlim()
        assert 4 <= hi <= 15 and -15 <= lo <= -4, (lo, hi)
    finally:
        plt.close(fig)
