r"""The opinion world: prompts with an enumerable answer set and a known ground truth.

A prompt asks for a choice in ``slots`` topics at once ("Do you prefer tea or coffee; summer or
winter; cats or dogs?") and an answer states one option per topic (" tea, winter, dogs."), so
the preference between two answers is carried by several tokens, one decision per topic, as in
long responses. A *topic group* is a set of ``slots`` topics asked together: either ``groups``
distinct combinations of the topics drawn by the seed (each in its own seeded order), or, with
``groups = 0``, the topics cut into disjoint groups in order; each group is asked in ``phrasings``
of the :data:`PROMPT_TEMPLATES` (0: every one). Every (topic, option) has a ground-truth share s; the ground-truth reward is

    r*(x, y) = (sum over the prompt's topics of log share(topic, option)) + ε(y),   ε ~ N(0, answer_noise²),

so the Plackett–Luce distribution of r* over the answers is, up to ε, the product of the option
shares: minority answers carry real preference mass. Three data sets are drawn from it:

* **comparisons**: Bradley–Terry samples (PM paper eq. 2.1) between two different answers (the
  reward model's data); a share ``malformed_fraction`` of them pits an answer against a
  malformed one (a topic's option replaced by another topic's, repeated, or left out), whose
  ground-truth reward is ``malformed_gap`` below the prompt's worst answer: the annotators reject
  malformed text, so the reward model learns to, as a real one does; ``content_negatives`` more per
  training prompt pit an answer against a variant with a content error only (an option of a topic
  not asked, an option repeated, two topics swapped), the errors a reward model that scores each
  option on its own rates *above* valid answers (measured: PPO then drifts into them);
* **demonstrations** (SFT data) from a *biased* annotator who picks the majority option of each
  topic with probability ``bias`` (else a minority option uniformly): the reference's token
  probability of a minority option is then ≈ (1 − bias)/(k − 1), which is what decides whether
  that token lies in M = {π_ref ≥ α};
* a second demonstration set biased towards the strongest minority option (``alt_bias``): the
  second reference of multi-reference reverse KL.

The **topic groups** are split by a seeded permutation (every phrasing of a group falls on the same
side, so a held-out prompt is never a rephrasing of a training one): the **training** prompts' data
train SFT, reward model and policy; every metric is computed on the **held-out** prompts, whose
demonstrations are the held-out human-written responses of the perplexity metric.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from prefmatch.llm.data import write_jsonl
from prefmatch.theory.distributions import bradley_terry

#: (topic, options); an option is written as it appears in an answer (lower case)
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("drink", ("tea", "coffee")),
    ("season", ("summer", "winter")),
    ("pet", ("cats", "dogs")),
    ("home", ("the city", "the countryside")),
    ("holiday", ("the beach", "the mountains")),
    ("reading", ("paper books", "e-books")),
    ("work", ("the office", "remote work")),
    ("film", ("comedies", "dramas")),
    ("time", ("mornings", "evenings")),
    ("travel", ("trains", "planes")),
    ("music", ("jazz", "rock", "classical music")),
    ("sport", ("football", "tennis", "swimming")),
    ("food", ("pizza", "pasta", "sushi")),
    ("colour", ("blue", "green", "red")),
    ("transport", ("bikes", "cars", "buses")),
    ("weather", ("sun", "rain", "snow")),
)

#: prompt phrasings; ``{opts}`` is "tea or coffee; summer or winter"
PROMPT_TEMPLATES: tuple[str, ...] = (
    "Do you prefer {opts}?",
    "Which would you choose: {opts}?",
    "What is better: {opts}?",
    "Pick for me: {opts}.",
    "Tell me your choice: {opts}.",
    "Choose one of each: {opts}.",
    "Which do you like more: {opts}?",
    "Give me your picks: {opts}.",
)

#: ground-truth option shares; each topic gets one, in a seeded order of its options
BINARY_SPLITS: tuple[tuple[float, ...], ...] = ((0.7, 0.3), (0.6, 0.4), (0.65, 0.35))
TERNARY_SPLITS: tuple[tuple[float, ...], ...] = ((0.5, 0.3, 0.2), (0.55, 0.3, 0.15))


def answer_vocabulary(n_topics: int = len(TOPICS)) -> list[str]:
    """The answer format's words: every option with its leading space, the comma and the full stop
    (the tokens of an answer-format tokenizer: each decision is then exactly one token)."""
    return [" " + o for _, opts in TOPICS[:n_topics] for o in opts] + [",", "."]


def format_prompt(question: str) -> str:
    """hh-rlhf layout (the trainer's data convention): the answer continues after "Assistant:"."""
    return f"\n\nHuman: {question}\n\nAssistant:"


def answer_text(words) -> str:
    """" tea, winter, dogs." — the answer that states one option per topic."""
    return " " + ", ".join(words) + "."


@dataclass(frozen=True)
class WorldConfig:
    """How the world is generated (a deterministic function of ``seed``)."""
    seed: int = 0
    n_topics: int = len(TOPICS)  # topics used, of TOPICS
    slots: int = 3  # topics per prompt (decisions per answer)
    bias: float = 0.8  # P(a topic's majority option) in the demonstrations: the reference's bias
    alt_bias: float = 0.8  # the second reference's, towards the strongest minority option
    sft_per_prompt: int = 24  # demonstrations per prompt
    comparisons_per_prompt: int = 64  # Bradley-Terry comparisons per training prompt
    answer_noise: float = 0.1  # sd of the ground truth's per-answer offset
    eval_fraction: float = 0.25  # share of the topic groups held out
    malformed_fraction: float = 0.25  # share of comparisons against a malformed answer
    malformed_gap: float = 3.0  # the malformed answer's ground truth, this far below the prompt's worst
    groups: int = 0  # topic groups drawn as distinct combinations (0: the disjoint groups, in order)
    phrasings: int = 0  # phrasings per group, drawn from PROMPT_TEMPLATES (0: every one)
    content_negatives: int = 0  # further comparisons per training prompt against a content-malformed answer

    def n_groups(self) -> int:
        return self.groups or self.n_topics // self.slots

    def check(self) -> None:
        if not 1 <= self.n_topics <= len(TOPICS):
            raise ValueError(f"n_topics must be in [1, {len(TOPICS)}], got {self.n_topics}")
        if not 1 <= self.slots <= min(self.n_topics, 4):
            raise ValueError(f"slots must be in [1, min(n_topics, 4)], got {self.slots}")
        if not 0 <= self.malformed_fraction < 1:
            raise ValueError(f"malformed_fraction must be in [0, 1), got {self.malformed_fraction}")
        if not 0 <= self.phrasings <= len(PROMPT_TEMPLATES):
            raise ValueError(f"phrasings must be in [0, {len(PROMPT_TEMPLATES)}], got {self.phrasings}")
        most = math.comb(self.n_topics, self.slots)
        if not 0 <= self.groups <= most:
            raise ValueError(f"groups must be in [0, {most}] (the distinct sets of {self.slots} of {self.n_topics} "
                             f"topics), got {self.groups}")
        if self.n_groups() < 2:
            raise ValueError(f"groups: the split needs at least 2 topic groups, got {self.n_groups()} "
                             f"(raise groups or n_topics)")
        if not self.malformed_gap > 0:
            raise ValueError(f"malformed_gap must be > 0, got {self.malformed_gap}")
        for name in ("bias", "alt_bias", "eval_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        for name in ("sft_per_prompt", "comparisons_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.content_negatives < 0:
            raise ValueError(f"content_negatives must be >= 0, got {self.content_negatives}")
        if not self.answer_noise >= 0:
            raise ValueError(f"answer_noise must be >= 0, got {self.answer_noise}")


@dataclass(frozen=True)
class OpinionPrompt:
    """One prompt, its enumerable answer set and its ground truth.

    ``answers[i]`` continues the prompt; ``choice[i]`` is the option index per slot;
    ``gt_reward[i]`` = r*(x, answers[i]); ``shares[s]`` the option shares of slot s;
    ``majority[s]`` the slot's majority option, ``alt_majority[s]`` its strongest minority option.
    """
    prompt: str
    topics: tuple[str, ...]
    answers: tuple[str, ...]
    choice: tuple[tuple[int, ...], ...]
    gt_reward: tuple[float, ...]
    shares: tuple[tuple[float, ...], ...]
    majority: tuple[int, ...]
    alt_majority: tuple[int, ...]
    heldout: bool = False
    group: int = 0  # the topic group (the unit of the train / held-out split)

    def answer_pairs(self) -> list[tuple[int, int]]:
        """Every pair (i, j), i < j, of different answers."""
        n = len(self.answers)
        return [(i, j) for i in range(n) for j in range(i + 1, n)]

    def majority_pairs(self) -> list[tuple[int, int]]:
        """Pairs (i, j) of answers that differ in one slot only, where i has that slot's majority option."""
        out = []
        for i, ci in enumerate(self.choice):
            for j, cj in enumerate(self.choice):
                diff = [s for s in range(len(ci)) if ci[s] != cj[s]]
                if len(diff) == 1 and ci[diff[0]] == self.majority[diff[0]]:
                    out.append((i, j))
        return out

    def is_majority(self) -> np.ndarray:
        """[answers, slots] bool: the answer states the slot's majority option."""
        return np.array([[c[s] == self.majority[s] for s in range(len(c))] for c in self.choice])


@dataclass
class OpinionCorpus:
    config: WorldConfig
    prompts: list[OpinionPrompt]
    sft: list[dict]  # {"prompt", "chosen"}: biased demonstrations, training prompts
    sft_alt: list[dict]  # the second reference's demonstrations, training prompts
    comparisons: list[dict]  # {"prompt", "chosen", "rejected"}, training prompts
    heldout: list[dict]  # demonstrations of the held-out prompts (the perplexity set)

    @property
    def train_prompts(self) -> list[OpinionPrompt]:
        return [p for p in self.prompts if not p.heldout]

    @property
    def eval_prompts(self) -> list[OpinionPrompt]:
        return [p for p in self.prompts if p.heldout]

    @property
    def heldout_groups(self) -> int:
        """Number of distinct topic groups among the held-out prompts (the independent units)."""
        return len({p.group for p in self.eval_prompts})

    def texts(self) -> list[str]:
        """Every string the models will read (the tokenizer's training corpus)."""
        return [p.prompt + a for p in self.prompts for a in p.answers] + [
            c["prompt"] + c["rejected"] for c in self.comparisons]

    def write(self, out_dir: str | Path) -> dict[str, str]:
        """sft.jsonl, sft_alt.jsonl, comparisons.jsonl, prompts.jsonl (training), heldout.jsonl, world.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "sft": write_jsonl(self.sft, out / "sft.jsonl"),
            "sft_alt": write_jsonl(self.sft_alt, out / "sft_alt.jsonl"),
            "comparisons": write_jsonl(self.comparisons, out / "comparisons.jsonl"),
            "prompts": write_jsonl([{"prompt": p.prompt} for p in self.train_prompts], out / "prompts.jsonl"),
            "heldout": write_jsonl(self.heldout, out / "heldout.jsonl"),
        }
        (out / "world.json").write_text(json.dumps(
            {"config": asdict(self.config), "prompts": [asdict(p) for p in self.prompts]}, indent=1))
        return {k: str(v) for k, v in paths.items()}


def _topic_shares(rng, n_topics: int) -> list[tuple[float, ...]]:
    out, n_bin, n_ter = [], 0, 0
    for _, options in TOPICS[:n_topics]:
        if len(options) == 2:
            split, n_bin = BINARY_SPLITS[n_bin % len(BINARY_SPLITS)], n_bin + 1
        else:
            split, n_ter = TERNARY_SPLITS[n_ter % len(TERNARY_SPLITS)], n_ter + 1
        order = rng.permutation(len(options))  # option o gets split[order[o]]
        out.append(tuple(float(split[order[o]]) for o in range(len(options))))
    return out


def topic_groups(cfg: WorldConfig, rng) -> list[tuple[int, ...]]:
    """The topic groups (topic indices, in the order asked): ``cfg.groups`` distinct sets of
    ``cfg.slots`` topics drawn by ``rng``, each in a drawn order, or the disjoint groups in order."""
    if not cfg.groups:
        return [tuple(g * cfg.slots + s for s in range(cfg.slots)) for g in range(cfg.n_topics // cfg.slots)]
    out: list[tuple[int, ...]] = []
    seen: set[frozenset[int]] = set()
    while len(out) < cfg.groups:
        g = tuple(int(t) for t in rng.choice(cfg.n_topics, size=cfg.slots, replace=False))
        if frozenset(g) not in seen:
            seen.add(frozenset(g))
            out.append(g)
    return out


def build_corpus(cfg: WorldConfig = WorldConfig()) -> OpinionCorpus:
    """Generate the world (deterministic in ``cfg.seed``).

    Each topic group (:func:`topic_groups`) is asked in ``cfg.phrasings`` of the
    :data:`PROMPT_TEMPLATES` (drawn; 0: all); its answers are every combination of options. A
    seeded share ``eval_fraction`` of the groups is held out, with all its phrasings.
    """
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    shares = _topic_shares(rng, cfg.n_topics)
    prompts: list[OpinionPrompt] = []
    for g, idx in enumerate(topic_groups(cfg, rng)):
        topics = [TOPICS[t] for t in idx]
        sh = [shares[t] for t in idx]
        choice = list(itertools.product(*[range(len(opts)) for _, opts in topics]))
        answers = [answer_text(opts[c] for (_, opts), c in zip(topics, ch)) for ch in choice]
        noise = rng.normal(0.0, cfg.answer_noise, size=len(choice))
        gt = [float(sum(math.log(sh[s][c]) for s, c in enumerate(ch)) + e) for ch, e in zip(choice, noise)]
        majority = tuple(int(np.argmax(s)) for s in sh)
        alt = tuple(int(np.argsort(s)[::-1][1]) for s in sh)
        opts = "; ".join(" or ".join(o) if len(o) == 2 else ", ".join(o[:-1]) + " or " + o[-1] for _, o in topics)
        templates = (PROMPT_TEMPLATES if not cfg.phrasings else
                     [PROMPT_TEMPLATES[i] for i in sorted(rng.choice(len(PROMPT_TEMPLATES), cfg.phrasings,
                                                                     replace=False))])
        for tpl in templates:
            prompts.append(OpinionPrompt(
                prompt=format_prompt(tpl.format(opts=opts)), topics=tuple(t for t, _ in topics),
                answers=tuple(answers), choice=tuple(choice), gt_reward=tuple(gt), shares=tuple(sh),
                majority=majority, alt_majority=alt, group=g))
    n_groups = cfg.n_groups()
    n_eval = min(n_groups - 1, max(1, round(cfg.eval_fraction * n_groups)))
    held = set(rng.permutation(n_groups)[:n_eval].tolist())
    prompts = [replace(p, heldout=True) if p.group in held else p for p in prompts]

    def demonstrations(p: OpinionPrompt, favoured, share: float, n: int) -> list[dict]:
        by_choice = dict(zip(p.choice, p.answers))
        # per slot, the annotator's option distribution as a CDF: searchsorted(cdf, u, "right") on one
        # uniform draw u is what rng.choice(k, p=...) does, without its per-call overhead
        cdfs = []
        for s, fav in enumerate(favoured):
            k = len(p.shares[s])
            probs = np.array([share if o == fav else (1 - share) / (k - 1) for o in range(k)])
            cdf = probs.cumsum()
            cdfs.append(cdf / cdf[-1])
        out = []
        for _ in range(n):
            ch = tuple(int(np.searchsorted(cdf, rng.random(), side="right")) for cdf in cdfs)
            out.append({"prompt": p.prompt, "chosen": by_choice[ch]})
        return out

    sft: list[dict] = []
    sft_alt: list[dict] = []
    comparisons: list[dict] = []
    heldout: list[dict] = []
    for p in prompts:
        demo = demonstrations(p, p.majority, cfg.bias, cfg.sft_per_prompt)
        demo_alt = demonstrations(p, p.alt_majority, cfg.alt_bias, cfg.sft_per_prompt)
        n, r = len(p.answers), np.asarray(p.gt_reward)
        bt = np.asarray(bradley_terry(r[:, None], r[None, :]))  # P(answer i beats answer j)
        bt_bad = np.asarray(bradley_terry(r, r.min() - cfg.malformed_gap))  # P(answer i beats a malformed one)
        def against_malformed(i: int, kind: int | None = None) -> tuple[str, str]:
            """(winner, loser) of answer i against a malformed variant, by Bradley-Terry with the gap."""
            bad = malformed(p, i, rng, cfg.n_topics, kind=kind)
            return (p.answers[i], bad) if rng.random() < float(bt_bad[i]) else (bad, p.answers[i])

        comps = []
        for _ in range(cfg.comparisons_per_prompt):
            i, j = rng.choice(n, size=2, replace=False)
            if rng.random() < cfg.malformed_fraction:
                win, lose = against_malformed(i)
            else:
                a, b = (i, j) if rng.random() < float(bt[i, j]) else (j, i)
                win, lose = p.answers[a], p.answers[b]
            comps.append({"prompt": p.prompt, "chosen": win, "rejected": lose})
        content = [k for k in CONTENT_KINDS if k in malformed_kinds(p, cfg.n_topics)]
        for _ in range(cfg.content_negatives if content and not p.heldout else 0):
            i = int(rng.integers(n))
            win, lose = against_malformed(i, content[int(rng.integers(len(content)))])
            comps.append({"prompt": p.prompt, "chosen": win, "rejected": lose})
        if p.heldout:
            heldout += demo
        else:
            sft += demo
            sft_alt += demo_alt
            comparisons += comps
    shuffle = lambda xs: [xs[i] for i in rng.permutation(len(xs))]  # noqa: E731
    return OpinionCorpus(cfg, prompts, shuffle(sft), shuffle(sft_alt), shuffle(comparisons), heldout)


#: the ways :func:`malformed` breaks an answer
MALFORMED_KINDS = ("foreign option", "repeated option", "missing topic", "swapped order", "extra option",
                   "no full stop")
#: the kinds that break an answer's content while keeping its format (a reward model that scores each option
#: on its own misses them, and PPO then finds them: ``content_negatives`` adds comparisons against them)
CONTENT_KINDS = (0, 1, 3)


def malformed_kinds(p: OpinionPrompt, n_topics: int = len(TOPICS)) -> list[int]:
    """The indices of :data:`MALFORMED_KINDS` that can break an answer of ``p`` (the ones that move or drop
    a topic need two; a foreign option needs a topic the prompt does not ask about)."""
    others = any(t not in p.topics for t, _ in TOPICS[:n_topics])
    return [k for k in range(len(MALFORMED_KINDS)) if (k not in (1, 2, 3) or len(p.topics) > 1) and (k or others)]


def malformed(p: OpinionPrompt, i: int, rng, n_topics: int = len(TOPICS), kind: int | None = None) -> str:
    """A malformed variant of answer ``i`` (never an answer of the set), of the given kind of
    :data:`MALFORMED_KINDS` or one drawn uniformly from :func:`malformed_kinds`: a topic's option replaced
    by an option of a topic the prompt does not ask about, or repeated from another slot; a topic left
    out; two topics in the wrong order; an option stated twice; the full stop left out."""
    words = [TOPICS[[t for t, _ in TOPICS].index(tp)][1][c] for tp, c in zip(p.topics, p.choice[i])]
    s = int(rng.integers(len(words)))
    others = [o for t, opts in TOPICS[:n_topics] if t not in p.topics for o in opts]
    if kind is None:
        kinds = malformed_kinds(p, n_topics)
        kind = kinds[int(rng.integers(len(kinds)))]
    elif kind not in malformed_kinds(p, n_topics):
        raise ValueError(f"kind: {MALFORMED_KINDS[kind]!r} cannot break an answer of {len(words)} topic(s)")
    if kind == 0:
        words[s] = others[int(rng.integers(len(others)))]
    elif kind == 1:
        words[s] = words[(s + 1) % len(words)]
    elif kind == 2:
        del words[s]
    elif kind == 3:
        t = (s + 1) % len(words)
        words[s], words[t] = words[t], words[s]
    elif kind == 4:
        words.insert(s + 1, words[s])
    else:
        return answer_text(words)[:-1]
    return answer_text(words)


def sft_majority_share(corpus: OpinionCorpus, alt: bool = False) -> float:
    """Fraction of the demonstrations' slot choices that are the favoured option (majority, or alt)."""
    by_prompt = {p.prompt: p for p in corpus.prompts}
    hits = total = 0
    for rec in corpus.sft_alt if alt else corpus.sft:
        p = by_prompt[rec["prompt"]]
        ch = p.choice[p.answers.index(rec["chosen"])]
        fav = p.alt_majority if alt else p.majority
        hits += sum(c == f for c, f in zip(ch, fav))
        total += len(ch)
    return hits / total


def empirical_comparison_preference(corpus: OpinionCorpus) -> tuple[float, float, int]:
    """Over the comparisons of two well-formed answers with different numbers of majority options:
    (the share won by the one with more, its Bradley–Terry expectation under r*, their number)."""
    by_prompt = {p.prompt: p for p in corpus.prompts}
    wins, expect = [], []
    for rec in corpus.comparisons:
        p = by_prompt[rec["prompt"]]
        if rec["chosen"] not in p.answers or rec["rejected"] not in p.answers:
            continue  # a malformed answer
        i, j = p.answers.index(rec["chosen"]), p.answers.index(rec["rejected"])
        mi, mj = p.is_majority()[i].sum(), p.is_majority()[j].sum()
        if mi == mj:
            continue
        a, b = (i, j) if mi > mj else (j, i)
        wins.append(a == i)
        expect.append(float(bradley_terry(p.gt_reward[a], p.gt_reward[b])))
    return float(np.mean(wins)), float(np.mean(expect)), len(wins)
