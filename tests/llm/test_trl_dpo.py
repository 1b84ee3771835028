"""TRL's DPOTrainer with the DPO loss of a prefmatch regularizer (llm/integrations/trl_dpo.py).

Skipped unless TRL is importable (it is not a dependency of the package).  The offsets b(y) that
replace TRL's reference log-probabilities are checked against independent computations: TRL's own
precomputed reference log-probs (KL, and Definition 4.1's indicator applied to them), the
constant C1 (PM), and the reference's teacher-forced token log-probs from prefmatch's own
``token_logprobs`` on TRL's token ids (token-level cPM)."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
pytest.importorskip("datasets")

from prefmatch.llm.integrations.trl_dpo import PMDPOTrainer  # noqa: E402
from prefmatch.llm.train.rewards import RegularizerConfigError  # noqa: E402

ALPHA = 0.002  # about the per-token probability of an untrained tiny model: the token indicator splits


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from datasets import Dataset

    from prefmatch.llm.data import synthetic_preferences
    from prefmatch.llm.models import init_model
    from prefmatch.llm.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("trl_dpo")
    recs = synthetic_preferences(8, seed=3)
    base = init_model(root / "base", "tiny", texts=[r["prompt"] + r["chosen"] + r["rejected"] for r in recs])
    ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in recs])
    return {"root": root, "base": str(base), "tok": load_tokenizer(base), "ds": ds}


def _trainer(setup, cls, name, **kw):
    from prefmatch.llm.models import load_causal_lm

    args = trl.DPOConfig(output_dir=str(setup["root"] / f"out_{name}"), beta=0.5, max_steps=2,
                         per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], use_cpu=True,
                         logging_steps=1, save_strategy="no", precompute_ref_log_probs=True)
    return cls(model=load_causal_lm(setup["base"]), args=args, train_dataset=setup["ds"],
               processing_class=setup["tok"], **kw)


def test_offsets_replace_the_reference_log_probs(setup):
    from prefmatch.llm.models import load_causal_lm, token_logprobs

    vanilla = _trainer(setup, trl.DPOTrainer, "vanilla").train_dataset
    ref_w, ref_l = np.array(vanilla["ref_chosen_logps"]), np.array(vanilla["ref_rejected_logps"])
    kl = _trainer(setup, PMDPOTrainer, "kl", regularizer="kl").train_dataset
    np.testing.assert_allclose(kl["ref_chosen_logps"], ref_w, rtol=1e-5)
    pm = _trainer(setup, PMDPOTrainer, "pm", regularizer="pm", regularizer_params={"c1": 0.4}).train_dataset
    np.testing.assert_allclose(pm["ref_chosen_logps"], 0.4, rtol=1e-6)  # b = C1: cancels in every difference
    seq = _trainer(setup, PMDPOTrainer, "cpm_seq", regularizer="cpm",
                   regularizer_params={"alpha": ALPHA, "level": "sequence"}).train_dataset
    la = math.log(ALPHA)
    np.testing.assert_allclose(seq["ref_rejected_logps"], np.where(ref_l < la, ref_l, 0.0), rtol=1e-5)
    tok = _trainer(setup, PMDPOTrainer, "cpm_tok", regularizer="cpm",
                   regularizer_params={"alpha": ALPHA, "level": "token"}).train_dataset
    ref = load_causal_lm(setup["base"])
    expected = []
    for p, c in zip(tok["prompt_ids"], tok["chosen_ids"]):
        ids = torch.tensor([p + c])
        with torch.no_grad():
            lp = token_logprobs(ref, ids, torch.ones_like(ids))[0, len(p) - 1:].double().numpy()
        expected.append(np.where(lp < la, lp, 0.0).sum())
    np.testing.assert_allclose(tok["ref_chosen_logps"], expected, rtol=1e-4, atol=1e-4)
    assert np.max(np.abs(np.array(tok["ref_chosen_logps"]) - np.array(seq["ref_chosen_logps"]))) > 1.0


def test_training_runs_and_starts_at_log2_for_kl(setup):
    tr = _trainer(setup, PMDPOTrainer, "kl_train", regularizer="kl")
    out = tr.train()
    first = [h for h in tr.state.log_history if "loss" in h][0]
    assert float(first["loss"]) == pytest.approx(math.log(2), abs=1e-5)  # policy = reference: h = 0
    assert math.isfinite(out.training_loss)
    tr = _trainer(setup, PMDPOTrainer, "pm_train", regularizer="pm")  # reference-free
    assert tr.ref_model is None and math.isfinite(tr.train().training_loss)


@pytest.mark.parametrize("kw,field", [({"regularizer": "fdiv"}, "regularizer"),
                                      ({"regularizer": "multi_rkl"}, "regularizer")])
def test_refusals_name_the_field(setup, kw, field):
    with pytest.raises(RegularizerConfigError, match=f"^{field}:"):
        _trainer(setup, PMDPOTrainer, "bad", **kw)


def test_loss_type_other_than_sigmoid_is_refused(setup):
    from prefmatch.llm.models import load_causal_lm

    args = trl.DPOConfig(output_dir=str(setup["root"] / "ipo"), beta=0.5, loss_type=["ipo"], report_to=[],
                         use_cpu=True)
    with pytest.raises(RegularizerConfigError, match="^loss_type:"):
        PMDPOTrainer(model=load_causal_lm(setup["base"]), args=args, train_dataset=setup["ds"],
                     processing_class=setup["tok"], regularizer="pm")


def test_trl_versions_other_than_the_tested_one_are_refused_in_one_line(monkeypatch):
    import trl

    from prefmatch.llm.integrations import trl_dpo

    monkeypatch.setattr(trl, "__version__", "1.15.0")
    with pytest.raises(ValueError, match=r"^trl: PMDPOTrainer support trl>=1\.16\.0,<1\.17 .*this is trl 1\.15\.0$"):
        trl_dpo.PMDPOTrainer(model=None, args=None)
