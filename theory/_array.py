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


def log_softmax_into(z, work, bound: float = 40.0):
    """Normalize numpy logits ``z`` [..., n] in place to log-probabilities (last axis).

    ``work`` is a scratch array of ``z``'s shape (it receives exp(z)); no temporary of the
    array's size is allocated, which is what keeps a row-blocked loop in cache.

    Optimistic first pass: log π = z − log Σ exp(z) without the max shift, kept for the rows
    whose log-normalizer lies in [−``bound``, ``bound``] (then max z ≥ −bound − log n and
    max z ≤ bound, so exp neither overflows nor underflows to a zero sum, and the rounding of
    z − log Σ is that of numbers ≤ bound + log n: ≲ 1e-14).  Other rows — large logits (huge
    rewards, tiny β), all logits very negative, or −inf everywhere — are redone with the usual
    max shift, which is exact in log space.  This saves the max and subtract passes in the
    common case.
    """
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        np.exp(z, out=work)
        lse = np.log(np.sum(work, axis=-1, keepdims=True))
        ok = np.abs(lse) <= bound  # False for inf/NaN too
        if ok.all():
            z -= lse
            return z
        n = z.shape[-1]
        z2, lse2, ok2 = np.reshape(z, (-1, n)), np.reshape(lse, (-1, 1)), np.reshape(ok, (-1,))
        redo = np.flatnonzero(~ok2)
        zr = log_softmax(z2[redo], overwrite=True)  # the max-shifted form, on those rows only
        keep = np.flatnonzero(ok2)
        z2[keep] -= lse2[keep]
        z2[redo] = zr
        if not np.shares_memory(z2, z):  # pragma: no cover - z2 is a view for contiguous z
            z[...] = np.reshape(z2, z.shape)
    return z


#: bytes of one [rows, n] block in row-blocked numpy loops: a few such blocks (output, scratch,
#: inputs) stay in the per-core L2/L3 cache, so every pass after the first read is a cache pass
BLOCK_BYTES = 1 << 20


def row_blocks(n_rows: int, n_cols: int, itemsize: int = 8, block_bytes: int | None = None):
    """Slices of about ``block_bytes`` of rows each covering range(n_rows) (at least one row)."""
    rows = max(1, (block_bytes or BLOCK_BYTES) // max(1, n_cols * itemsize))
    return [slice(i, min(i + rows, n_rows)) for i in range(0, n_rows, rows)]


def blockable(r, ref_logp=None, ref_ndim: int = 2) -> bool:
    """Whether a row-blocked numpy loop applies: float64 numpy ``r`` of shape [B, n] with more
    than one block, and ``ref_logp`` ``None`` or a float64 numpy array of at most ``ref_ndim``
    dimensions (exactly 3 — [K, B or 1, n] — for K references) whose last axes broadcast against ``r``."""
    if not (isinstance(r, np.ndarray) and r.ndim == 2 and r.dtype == np.float64):
        return False
    if len(row_blocks(r.shape[0], r.shape[1])) < 2:
        return False
    if ref_logp is None:
        return True
    return (
        isinstance(ref_logp, np.ndarray)
        and ref_logp.dtype == np.float64
        and (ref_logp.ndim == 3 if ref_ndim == 3 else ref_logp.ndim <= 2)
        and ref_logp.shape[-1] == r.shape[-1]
        and (ref_logp.ndim < 2 or ref_logp.shape[-2] in (1, r.shape[0]))
    )


def take_rows(x, sl: slice, n_rows: int):
    """``x[..., sl, :]`` when ``x`` has a rows axis of length ``n_rows`` (second to last), else
    ``x`` itself (it broadcasts against every block)."""
    if x is None or x.ndim < 2 or x.shape[-2] != n_rows:
        return x
    return x[..., sl, :]


def xexpy(logp, y):
    """exp(logp)·y with the convention 0·y = 0 where the probability is 0 (y may be ±inf)."""
    xp = namespace(logp, y)
    p = xp.exp(logp)
    return xp.where(p > 0, p * y, 0.0)


def weighted_sum(weights, stacked, out=None):
    """Σ_i w_i·x_i over the leading axis with 0·(−inf) = 0 (a weight of 0 ignores that term).

    One ``tensordot`` (a BLAS matrix–vector product for numpy) over the references with a
    positive weight: it reads the K arrays once instead of K multiply and K − 1 add passes.
    ``out`` (numpy only, C-contiguous of the result's shape) receives the result.
    """
    if out is not None and stacked.shape[1:] == out.shape and out.flags.c_contiguous:
        w = np.asarray(weights, dtype=np.float64)
        if np.all(w > 0):  # the row-blocked path: no namespace lookup, no temporary
            # [K, rows, n] row block of a [K, B, n] array: a view as [K, rows·n] (no copy)
            np.dot(w, np.reshape(stacked, (stacked.shape[0], -1)), out=np.reshape(out, (-1,)))
            return out
    xp = namespace(stacked)
    keep = [i for i, w in enumerate(weights) if float(w) > 0.0]
    if not keep:
        raise ValueError("weights must have at least one positive entry")
    if len(keep) < stacked.shape[0]:
        stacked = xp.take(stacked, xp.asarray(keep, device=array_api_compat.device(stacked)), axis=0)
    w = xp.asarray([float(weights[i]) for i in keep], dtype=stacked.dtype, device=array_api_compat.device(stacked))
    res = xp.tensordot(w, stacked, axes=1)
    if out is None:
        return res
    out[...] = res
    return out


def last_token_mask(mask):
    """1 at the last position of each row where ``mask`` is 1 (mask: float [..., T] of 0/1)."""
    xp = namespace(mask)
    m = mask
    nxt = xp.concat([m[..., 1:], xp.zeros_like(m[..., :1])], axis=-1)
    return m * (1 - nxt)


def check_reward(r, name: str = "reward") -> None:
    """ValueError unless every entry of ``r`` is finite (one pass: the sum is finite iff every
    entry is, barring overflow, then checked entrywise)."""
    xp = namespace(r)
    if bool(xp.isfinite(xp.sum(r))) or bool(xp.all(xp.isfinite(r))):
        return
    raise ValueError(f"{name} must be finite (no NaN or inf)")
