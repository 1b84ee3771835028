"""Enumerable response sets of tabular token worlds: every complete response of up to ``length``
tokens, as the trainers generate them (a response ends at its first EOS or is cut at
``length`` tokens), and the prefix tree that indexes an autoregressive tabular policy.

Shared by the ``grad.*`` checks (exact expectations over responses and batches) and the
trainers' convergence batteries (:mod:`prefmatch.llm.battery.ppo`), so that both reason about the
same set of outcomes.
"""
from __future__ import annotations

import itertools

import numpy as np


def enumerate_responses(vocab: int, length: int, eos: int | None):
    """Every complete response: ``(tokens [n, length] right-padded with 0, mask [n, length])``.

    Without ``eos`` every response has ``length`` tokens; with it, a response ends at its first
    ``eos`` (lengths 1..length) or is cut at ``length`` tokens without one, as generation does."""
    if vocab < 2 or length < 1:
        raise ValueError(f"vocab must be >= 2 and length >= 1, got vocab={vocab}, length={length}")
    if eos is not None and not 0 <= eos < vocab:
        raise ValueError(f"eos must be a token id in [0, {vocab}), got {eos}")
    if eos is None:
        seqs = [list(t) for t in itertools.product(range(vocab), repeat=length)]
    else:
        body = [v for v in range(vocab) if v != eos]
        seqs = [list(t) + [eos] for m in range(length) for t in itertools.product(body, repeat=m)]
        seqs += [list(t) for t in itertools.product(body, repeat=length)]
    tokens = np.zeros((len(seqs), length), dtype=np.int64)
    mask = np.zeros((len(seqs), length))
    for i, q in enumerate(seqs):
        tokens[i, :len(q)] = q
        mask[i, :len(q)] = 1.0
    return tokens, mask


def prefix_rows(tokens: np.ndarray, mask: np.ndarray):
    """``(rows [n, length], n_rows)``: the index of the prefix y_<t that token t of each response is
    drawn after (one row per distinct prefix that some response continues), for a tabular policy
    π(y_t | y_<t) = softmax(θ[row]); positions past a response's end get row 0."""
    index: dict[tuple, int] = {(): 0}
    rows = np.zeros(tokens.shape, dtype=np.int64)
    for i, (seq, m) in enumerate(zip(tokens, mask)):
        for t in range(int(m.sum())):
            rows[i, t] = index.setdefault(tuple(seq[:t].tolist()), len(index))
    return rows, len(index)
