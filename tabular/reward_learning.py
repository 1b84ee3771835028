r"""Bradley–Terry maximum likelihood from comparison *counts* (PM paper App. A.2; second paper eq. 3).

With ``wins[..., i, j]`` the number of times response i beat response j (for one prompt; any
leading axes are a batch of prompts and trials), the BT log-likelihood is

    ℓ(r) = Σ_{i,j} W_ij log σ(r_i − r_j),

which depends on the data only through the counts: fitting costs O(n²) per prompt whatever the
number of comparisons.  Two reward classes:

* **tabular** r ∈ [0, R_max]^n per prompt (Assumption 4.1 of the second paper): −ℓ is convex;
  :func:`bt_mle_tabular` runs a batched projected Newton method (Bertsekas 1982) on the box.
  ℓ is invariant to a per-prompt shift, which no gap depends on (Lemma A.4); the Newton system
  carries a tiny ridge for that null direction, and responses never compared keep their start.
* **finite** class {r_1..r_M}: :func:`bt_mle_finite_class` is the argmax of ℓ over the class.
"""
from __future__ import annotations

import numpy as np

from prefmatch.theory.distributions import log_sigmoid

__all__ = [
    "bt_log_likelihood",
    "bt_gradient_hessian",
    "bt_mle_tabular",
    "bt_mle_finite_class",
    "mle_error_sq",
]


def bt_log_likelihood(reward, wins) -> np.ndarray:
    """ℓ(r) = Σ_{i,j} W_ij log σ(r_i − r_j) over the last two axes of ``wins`` [..., n, n]."""
    reward = np.asarray(reward, dtype=np.float64)
    d = reward[..., :, None] - reward[..., None, :]
    return np.sum(np.where(wins > 0, wins * log_sigmoid(d), 0.0), axis=(-2, -1))


def bt_gradient_hessian(reward, wins):
    r"""Gradient and Hessian of the *negative* log-likelihood −ℓ, batched.

    With d_ij = r_i − r_j and M_ij = W_ij σ(−d_ij): ∂(−ℓ)/∂r_i = Σ_j M_ji − Σ_j M_ij.
    The Hessian is the graph Laplacian of A_ij = (W_ij + W_ji) σ(d_ij) σ(−d_ij) (PSD, null
    vector 1).
    """
    d = reward[..., :, None] - reward[..., None, :]
    s_neg = np.exp(log_sigmoid(-d))
    m = wins * s_neg
    grad = np.sum(m, axis=-2) - np.sum(m, axis=-1)
    a = (wins + np.swapaxes(wins, -1, -2)) * s_neg * (1.0 - s_neg)
    hess = -a
    idx = np.arange(reward.shape[-1])
    hess[..., idx, idx] = np.sum(a, axis=-1) - a[..., idx, idx]
    return grad, hess


def bt_mle_tabular(
    wins,
    r_max: float = 1.0,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    init=None,
) -> np.ndarray:
    r"""argmax_{r ∈ [0, R_max]^n} ℓ(r) for every prompt (and trial) of ``wins`` [..., n, n].

    Batched projected Newton: variables at a bound whose gradient pushes outwards are fixed
    (ε-active set), the Newton system on the free ones is solved for all problems at once
    (``np.linalg.solve`` on [B, n, n]), the step is projected on the box and an Armijo
    backtracking keeps it a descent step.  Stops when the projected-gradient step is ≤ ``tol``.
    """
    w = np.asarray(wins, dtype=np.float64)
    n = w.shape[-1]
    batch = w.shape[:-2]
    w = np.reshape(w, (-1, n, n))
    r = np.full((w.shape[0], n), 0.5 * r_max) if init is None else np.clip(
        np.asarray(init, dtype=np.float64).reshape(-1, n), 0.0, r_max).copy()
    lo, hi = 0.0, float(r_max)
    eye = np.eye(n)
    active_rows = np.arange(w.shape[0])
    f = -bt_log_likelihood(r, w)
    for _ in range(max_iter):
        rr, ww, ff = r[active_rows], w[active_rows], f[active_rows]
        g, h = bt_gradient_hessian(rr, ww)
        pg = np.clip(rr - g, lo, hi) - rr
        done = np.max(np.abs(pg), axis=-1) <= tol
        if np.all(done):
            break
        keep = ~done
        active_rows, rr, ww, ff, g, h = active_rows[keep], rr[keep], ww[keep], ff[keep], g[keep], h[keep]
        eps = np.minimum(1e-8, np.max(np.abs(pg[keep]), axis=-1, keepdims=True))
        fixed = ((rr <= lo + eps) & (g > 0)) | ((rr >= hi - eps) & (g < 0))
        free = ~fixed
        both = free[..., :, None] & free[..., None, :]
        scale = np.maximum(np.max(np.abs(np.diagonal(h, axis1=-2, axis2=-1)), axis=-1), 1.0)
        h_red = np.where(both, h, 0.0) + eye * np.where(free, 1e-9 * scale[:, None], scale[:, None])[..., None]
        g_red = np.where(free, g, 0.0)
        step = -np.linalg.solve(h_red, g_red[..., None])[..., 0]
        step = np.where(free, step, -g / scale[:, None])
        t = np.ones((rr.shape[0], 1))
        accepted = np.zeros(rr.shape[0], dtype=bool)
        new_r, new_f = rr.copy(), ff.copy()
        for _ in range(40):
            cand = np.clip(rr + t * step, lo, hi)
            fc = -bt_log_likelihood(cand, ww)
            ok = (fc <= ff + 1e-4 * np.sum(g * (cand - rr), axis=-1) + 1e-13 * np.abs(ff)) & ~accepted
            new_r[ok], new_f[ok] = cand[ok], fc[ok]
            accepted |= ok
            if np.all(accepted):
                break
            t = np.where(accepted[:, None], t, 0.5 * t)
        r[active_rows], f[active_rows] = new_r, new_f
    return r.reshape(batch + (n,))


def bt_mle_finite_class(wins, candidates) -> np.ndarray:
    r"""Index of the finite-class MLE argmax_m ℓ(r_m) per trial.

    ``wins`` [T, X, n, n] (or [X, n, n]), ``candidates`` [M, X, n]; the log-likelihood of all
    candidates for all trials is one contraction of the counts with log σ(r_i − r_j).
    """
    c = np.asarray(candidates, dtype=np.float64)
    logsig = log_sigmoid(c[..., :, None] - c[..., None, :])  # [M, X, n, n]
    w = np.asarray(wins, dtype=np.float64)
    ll = np.einsum("...xij,mxij->...m", w, logsig)
    return np.argmax(ll, axis=-1)


def mle_error_sq(r_hat, r_star, data_logp, rho) -> np.ndarray:
    r"""E_{x∼ρ, y,y′∼π_data}[(Δ(x,y) − Δ(x,y′))²], Δ = r* − r̂ (the quantity of Lemma A.1).

    = 2 E_x Var_{π_data(·|x)}(Δ); invariant to per-prompt shifts of r̂.  Batched over leading
    axes of ``r_hat`` [..., X, n].
    """
    p = np.exp(data_logp)
    delta = np.asarray(r_star) - np.asarray(r_hat)
    mean = np.sum(p * delta, axis=-1, keepdims=True)
    var = np.sum(p * (delta - mean) ** 2, axis=-1)
    return 2.0 * np.sum(rho * var, axis=-1)
