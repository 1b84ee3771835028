"""The row-blocked numpy path (theory/_array.row_blocks) gives the unblocked answers.

Large [B, n] numpy inputs are solved in row blocks of about ``BLOCK_BYTES`` with reused scratch
buffers.  Here the block size is made tiny so that 10–13 rows span several blocks (one of them
ragged), and every regularizer's blocked answer is compared with the answer of one call on the
whole array (blocking switched off) and with row-by-row 1-D solves.
"""
from __future__ import annotations

import numpy as np
import pytest

from prefmatch.theory import _array as A
from prefmatch.theory import fdivergences as F
from prefmatch.theory import regularizers as R

NAMES = sorted(R.ALL_REGULARIZERS)
N = 9  # responses


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 3 rows of N float64 responses."""
    monkeypatch.setattr(A, "BLOCK_BYTES", 3 * N * 8)
    return 3


def unblocked(fn, monkeypatch):
    monkeypatch.setattr(A, "BLOCK_BYTES", 1 << 40)
    try:
        return fn()
    finally:
        monkeypatch.setattr(A, "BLOCK_BYTES", 3 * N * 8)


def ref_shapes(reg, B):
    k = (len(reg.weights),) if reg.multi_reference else ()
    return [k + (B, N), k + (1, N)] + ([] if reg.multi_reference else [(N,)])


def make(reg, rng, B, ref_shape, scale=1.0, zeros=False):
    r = scale * rng.normal(size=(B, N))
    ref = rng.dirichlet(np.ones(N), size=ref_shape[:-1])
    if zeros and len(ref_shape) >= 2 and ref_shape[-2] == B:
        # π_ref = 0 on response 2 of some rows only: some blocks have full support, some not
        hit = rng.random(ref.shape[:-1]) < 0.3
        hit[..., 1] = True
        ref[..., 2] = np.where(hit, 0.0, ref[..., 2])
        ref /= ref.sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return r, np.log(ref)


def test_row_blocks_cover_rows():
    for n_rows, n_cols, bb in [(10, 9, 3 * 72), (1, 5, 8), (7, 1000, 1 << 20), (13, 2, 1)]:
        sl = A.row_blocks(n_rows, n_cols, block_bytes=bb)
        covered = np.concatenate([np.arange(n_rows)[s] for s in sl])
        np.testing.assert_array_equal(covered, np.arange(n_rows))
        assert all(s.stop > s.start for s in sl)


def test_blockable_rules(tiny_blocks):
    r = np.zeros((10, N))
    assert A.blockable(r, np.zeros((10, N)))
    assert A.blockable(r, np.zeros(N)) and A.blockable(r, None)
    assert not A.blockable(r[:2], np.zeros((2, N)))  # one block only
    assert not A.blockable(r.astype(np.float32), None)
    assert not A.blockable(r, np.zeros((2, 10, N)))  # single reference with an extra axis
    assert A.blockable(r, np.zeros((2, 10, N)), ref_ndim=3)
    assert not A.blockable(r, np.zeros((2, N)), ref_ndim=3)  # [K, n]: K must not pass as rows
    assert not A.blockable(np.zeros((2, 10, N)), None)
    torch = pytest.importorskip("torch")
    assert not A.blockable(torch.zeros(10, N, dtype=torch.float64), None)


@pytest.mark.parametrize("name", NAMES)
def test_blocked_equals_unblocked(name, tiny_blocks, monkeypatch):
    reg = R.ALL_REGULARIZERS[name]
    rng = np.random.default_rng(11)
    B = 10
    for ref_shape in ref_shapes(reg, B):
        for scale, zeros in [(1.0, False), (1.0, True), (300.0, False)]:
            r, ref_logp = make(reg, rng, B, ref_shape, scale, zeros)
            got = reg.optimal_logp(r, ref_logp)
            want = unblocked(lambda: reg.optimal_logp(r, ref_logp), monkeypatch)
            assert got.shape == want.shape
            np.testing.assert_allclose(np.exp(got), np.exp(want), rtol=0, atol=1e-13)
            np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
            # and each row solved alone
            for i in (0, 4, B - 1):
                ri = ref_logp if ref_logp.shape[-2:-1] != (B,) else ref_logp[..., i, :]
                if ri.ndim >= 2 and ri.shape[-2] == 1:
                    ri = ri[..., 0, :]
                np.testing.assert_allclose(np.exp(reg.optimal_logp(r[i], ri)), np.exp(got[i]), atol=1e-12)


@pytest.mark.parametrize("name", ["kl", "multi_rkl", "fdiv_reverse_kl", "fdiv_hellinger", "multi_fkl", "pm"])
def test_blocked_path_is_taken(name, tiny_blocks, monkeypatch):
    """Guards the tests above: with tiny blocks the loop really runs more than once."""
    reg = R.ALL_REGULARIZERS[name]
    calls = []
    orig = A.take_rows
    spy = lambda x, sl, n: (calls.append(sl), orig(x, sl, n))[1]  # noqa: E731
    monkeypatch.setattr(R, "take_rows", spy)  # the affine family's loop
    monkeypatch.setattr(F, "take_rows", spy)  # the f-divergence root-finder's loop
    r, ref_logp = make(reg, np.random.default_rng(0), 10, ref_shapes(reg, 10)[0])
    reg.optimal_logp(r, ref_logp)
    assert len(calls) == 4  # rows 0-2, 3-5, 6-8, 9


@pytest.mark.parametrize("name", ["fdiv_reverse_kl", "fdiv_js", "fdiv_chi2", "multi_fkl"])
def test_blocked_multipliers(name, tiny_blocks, monkeypatch):
    reg = R.ALL_REGULARIZERS[name]
    r, ref_logp = make(reg, np.random.default_rng(5), 11, ref_shapes(reg, 11)[0])
    for meth in ("lagrange_multiplier", "lagrange_gap"):
        got = getattr(reg, meth)(r, ref_logp)
        want = unblocked(lambda: getattr(reg, meth)(r, ref_logp), monkeypatch)
        assert got.shape == (11, 1)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["kl", "pm", "multi_rkl", "fdiv_reverse_kl", "cpm_seq"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_blocked_rejects_bad_reward_in_any_block(name, bad, tiny_blocks):
    reg = R.ALL_REGULARIZERS[name]
    r, ref_logp = make(reg, np.random.default_rng(3), 10, ref_shapes(reg, 10)[0])
    r[9, 4] = bad  # the last, ragged block
    with pytest.raises(ValueError, match="reward must be finite"):
        reg.optimal_logp(r, ref_logp)


def test_blocked_extremes(tiny_blocks, monkeypatch):
    """Rewards of ±1e4 at β = 1e-4 and π_ref(top) = 1e-300 stay exact when blocked."""
    rng = np.random.default_rng(9)
    r = rng.normal(size=(10, N)) * 1e4
    ref = rng.dirichlet(np.ones(N), size=10)
    ref[:, np.argmax(r, axis=-1)[0]] = 1e-300
    ref /= ref.sum(-1, keepdims=True)
    for reg in (R.kl(beta=1e-4), R.f_divergence("reverse_kl", beta=1e-4), R.pm()):
        got = reg.optimal_logp(r, np.log(ref))
        want = unblocked(lambda: reg.optimal_logp(r, np.log(ref)), monkeypatch)
        assert np.all(np.isfinite(got) | np.isneginf(got))
        np.testing.assert_allclose(np.exp(got), np.exp(want), atol=1e-13)
        np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, atol=1e-12)


def test_weighted_sum_out_matches_tensordot():
    rng = np.random.default_rng(4)
    stacked = rng.normal(size=(3, 8, N))
    w = (0.2, 0.0, 0.8)
    want = np.tensordot(np.array([0.2, 0.8]), stacked[[0, 2]], axes=1)
    for rows in (slice(0, 8), slice(2, 5)):  # whole array and a row block (a strided view)
        out = np.empty((rows.stop - rows.start, N))
        got = A.weighted_sum(w, stacked[:, rows], out=out)
        assert got is out
        np.testing.assert_allclose(got, want[rows], rtol=1e-15, atol=1e-15)
    out = np.empty((8, N))
    np.testing.assert_allclose(A.weighted_sum((0.5, 0.25, 0.25), stacked, out=out),
                               np.tensordot([0.5, 0.25, 0.25], stacked, axes=1), atol=1e-15)


def test_log_softmax_into_matches_log_softmax():
    from scipy.special import log_softmax

    rng = np.random.default_rng(6)
    z = rng.normal(size=(5, N)) * 50
    z[1, 3] = -np.inf
    z[2] += 1e8
    work = np.empty_like(z)
    got = A.log_softmax_into(z.copy(), work)
    np.testing.assert_allclose(got, log_softmax(z, axis=-1), atol=1e-12)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, atol=1e-13)


@pytest.mark.parametrize("scale,shift", [(1.0, 0.0), (10.0, 30.0), (10.0, -60.0), (1e3, 0.0), (1.0, 800.0), (1.0, -800.0)])
def test_log_softmax_into_optimistic_and_fallback_rows(scale, shift):
    """Rows whose log-normalizer is within ±40 skip the max shift; the others (huge logits, all
    logits very negative) take it; both agree with scipy to the rounding of the logits."""
    from scipy.special import log_softmax

    rng = np.random.default_rng(int(scale) + int(shift) % 97)
    z = rng.normal(size=(6, 50)) * scale + shift
    z[0] = rng.normal(size=50)  # one ordinary row in every case: a mix of both paths
    got = A.log_softmax_into(z.copy(), np.empty_like(z))
    want = log_softmax(z, axis=-1)
    tol = 4 * np.finfo(float).eps * (np.abs(z).max(axis=-1, keepdims=True) + 1)
    assert np.all(np.abs(got - want) <= tol + 1e-14)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, atol=1e-13)


def test_log_softmax_into_degenerate_rows():
    z = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [1e300, 0.0, -1e300]])
    got = A.log_softmax_into(z.copy(), np.empty_like(z))
    np.testing.assert_allclose(got[0], [-np.log1p(np.e), -np.inf, 1 - np.log1p(np.e)])
    assert np.all(np.isnan(got[1]))  # no distribution: the same answer as log_softmax gives
    np.testing.assert_array_equal(got[2], [0.0, -1e300, -2e300])


@pytest.mark.parametrize("c1_shape", [(), (N,), (10, 1), (10, N)])
def test_pm_constants_with_prompt_axis(c1_shape, tiny_blocks, monkeypatch):
    """A per-prompt C1 (an array with a rows axis) cannot be sliced by the row blocks: PM then
    takes the whole-array path; the answers agree either way (and alone or in weighted())."""
    rng = np.random.default_rng(8)
    r = rng.normal(size=(10, N))
    ref_logp = np.log(rng.dirichlet(np.ones(N), size=10))
    c1 = rng.normal(size=c1_shape) if c1_shape else 0.3
    for reg in (R.pm(c1=c1), R.weighted(R.pm(c1=c1), R.kl(beta=0.5))):
        got = reg.optimal_logp(r, ref_logp)
        want = unblocked(lambda: reg.optimal_logp(r, ref_logp), monkeypatch)
        np.testing.assert_allclose(got, want, atol=1e-13)
        b = np.broadcast_to(np.asarray(c1, float), r.shape) if c1_shape != (N,) else np.broadcast_to(c1, r.shape)
        a = 1.0 if isinstance(reg, R.PM) else 1.5
        z = (r + b + (0.0 if isinstance(reg, R.PM) else 0.5 * ref_logp)) / a
        from scipy.special import log_softmax

        np.testing.assert_allclose(got, log_softmax(z, axis=-1), atol=1e-12)


def test_blocked_multi_fkl_tiny_mixture_stays_exact(tiny_blocks, monkeypatch):
    """The blocked mixture goes through probabilities; a block whose mixture underflows there
    (π_ref of e^-800 under both references) is redone in log space: log π stays finite."""
    reg = R.multi_fkl(weights=(0.3, 0.7), beta=0.5)
    rng = np.random.default_rng(12)
    r = rng.normal(size=(10, N))
    ref_logp = np.log(rng.dirichlet(np.ones(N), size=(2, 10)))
    ref_logp[:, 4:6, 3] = -800.0  # rows 4-5: the second block
    ref_logp[0, 7, 5] = -np.inf  # one reference without response 5 in row 7: still in the mixture
    got = reg.optimal_logp(r, ref_logp)
    want = unblocked(lambda: reg.optimal_logp(r, ref_logp), monkeypatch)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, atol=1e-12)


def test_arithmetic_mixture_buffers_match_logsumexp_form():
    """The buffered (probability-space) mixture equals the logsumexp form, and a block whose
    mixture underflows there falls back to it (log P̄ of e^-800 stays −800 + log Σα, not −inf)."""
    from prefmatch.theory.distributions import arithmetic_mixture

    rng = np.random.default_rng(13)
    L = np.log(rng.dirichlet(np.ones(N), size=(3, 4)))
    w = (0.2, 0.5, 0.3)
    want = arithmetic_mixture(L, w)
    out, work = np.empty((4, N)), np.empty((4, N))
    got = arithmetic_mixture(L, w, out=out, work=work)
    assert got is out
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    L[:, 2, 5] = -800.0
    got = arithmetic_mixture(L, w, out=out, work=work)
    np.testing.assert_allclose(got, arithmetic_mixture(L, w), rtol=1e-14)
    assert got[2, 5] == pytest.approx(-800.0, abs=1e-12)
