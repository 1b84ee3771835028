"""Array-API helpers shared by every layer (numpy in tabular/, torch in llm/).

Only the functions here touch the array library directly; formulas elsewhere call them so a
single expression runs on numpy arrays and torch tensors (``array_api_compat``).
"""
from __future__ import annotations

import contextlib

import array_api_compat
import numpy as np


def namespace(*arrays):
    """The array-API namespace of the array arguments (Python scalars and ``None`` ignored)."""
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    if not arrs:
        return array_api_compat.array_namespace(np.zeros(0))
    return array_api_compat.array_namespace(*arrs)


def asarray(x, like=None):
    """``x`` as an array of the namespace of ``like`` (float64 for numpy input)."""
    if like is not None and not isinstance(like, (int, float)):
        xp = namespace(like)
        if isinstance(x, (int, float)):
            return xp.asarray(x, dtype=like.dtype, device=array_api_compat.device(like))
        return x if array_api_compat.is_array_api_obj(x) else xp.asarray(x, dtype=like.dtype)
    if array_api_compat.is_array_api_obj(x):
        return x
    return np.asarray(x, dtype=np.float64)


@contextlib.contextmanager
def quiet():
    """Silence numpy's divide/invalid warnings: log(0) = -inf is intended in log space."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        yield


def logsumexp(x, axis: int = -1, keepdims: bool = False):
    """log Σ exp(x) along ``axis``; exact for -inf entries, all -inf gives -inf."""
    xp = namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    if not keepdims:
        out = xp.squeeze(out, axis=axis)
    return out


def log_softmax(x, axis: int = -1, *, overwrite: bool = False):
    """x − logsumexp(x): the log of the normalized distribution ∝ exp(x).

    Computed as (x − m) − log Σ exp(x − m) with m = max x, so that no |x|·eps rounding enters
    (rewards of 1e4 at β = 1e-4 give logits of 1e8 and still exact answers).  ``overwrite=True``
    reuses ``x``'s memory (for a temporary the caller no longer needs; numpy only — torch tensors
    are never modified in place, so autograd sees every step).
    """
    xp = namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)
    if not isinstance(x, np.ndarray):  # torch: no in-place ops (autograd must see every step)
        z = x - m
        return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))
    if overwrite:
        x -= m
        z = x
    else:
        z = x - m
    z -= xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))  # in place: one temporary fewer
    return z


def xexpy(logp, y):
    """exp(logp)·y with the convention 0·y = 0 where the probability is 0 (y may be ±inf)."""
    xp = namespace(logp, y)
    p = xp.exp(logp)
    return xp.where(p > 0, p * y, 0.0)


def weighted_sum(weights, stacked):
    """Σ_i w_i·x_i over the leading axis with 0·(−inf) = 0 (a weight of 0 ignores that term).

    One ``tensordot`` (a BLAS matrix–vector product for numpy) over the references with a
    positive weight: it reads the K arrays once instead of K multiply and K − 1 add passes.
    """
    xp = namespace(stacked)
    keep = [i for i, w in enumerate(weights) if float(w) > 0.0]
    if not keep:
        raise ValueError("weights must have at least one positive entry")
    if len(keep) < stacked.shape[0]:
        stacked = xp.take(stacked, xp.asarray(keep, device=array_api_compat.device(stacked)), axis=0)
    w = xp.asarray([float(weights[i]) for i in keep], dtype=stacked.dtype, device=array_api_compat.device(stacked))
    return xp.tensordot(w, stacked, axes=1)


def last_token_mask(mask):
    """1 at the last position of each row where ``mask`` is 1 (mask: float [..., T] of 0/1)."""
    xp = namespace(mask)
    m = mask
    nxt = xp.concat([m[..., 1:], xp.zeros_like(m[..., :1])], axis=-1)
    return m * (1 - nxt)
