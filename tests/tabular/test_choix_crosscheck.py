"""The BT maximum-likelihood fit against an independent library: choix (Maystre's BT/Plackett-Luce
inference) on the same comparisons gives the same rewards up to the BT shift."""
from __future__ import annotations

import numpy as np
import pytest

from prefmatch.tabular.reward_learning import bt_log_likelihood, bt_mle_tabular

choix = pytest.importorskip("choix")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bt_mle_matches_choix(seed):
    rng = np.random.default_rng(seed)
    n = 5
    r_true = rng.uniform(0, 2, n)
    wins = np.zeros((n, n))
    data = []
    for i in range(n):
        for j in range(i + 1, n):
            p = 1 / (1 + np.exp(-(r_true[i] - r_true[j])))
            k = int(rng.binomial(40, p))
            wins[i, j], wins[j, i] = k, 40 - k
            data += [(i, j)] * k + [(j, i)] * (40 - k)
    # a box wide enough that the unconstrained MLE lies inside it, started at its centre
    ours = bt_mle_tabular(wins, r_max=40.0, init=np.full(n, 20.0), tol=1e-12)
    theirs = choix.opt_pairwise(n, data, alpha=0.0, tol=1e-12)
    centred = ours - ours.mean()
    assert np.allclose(centred, theirs - theirs.mean(), atol=1e-5), (centred, theirs)
    # and both are maximizers: nothing nearby has a higher likelihood
    ll = bt_log_likelihood(ours, wins)
    for _ in range(20):
        assert bt_log_likelihood(ours + rng.normal(0, 1e-3, n), wins) <= ll + 1e-12
