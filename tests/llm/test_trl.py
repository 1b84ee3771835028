"""The TRL integration: PMGRPOTrainer / PMRLOOTrainer reach theory's optimum (the TRL battery),
TRL's own k3 loss lands where the ``grad.*`` checks predict, and bad arguments get one-line errors.

``pytest -m trl`` runs all of it (``make test-trl``, about 8 minutes on 2 cores); the battery
cases are also marked slow, so ``make test`` runs only the argument checks and one quick case.
"""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl", reason="the trl extra is not installed (pip install -e .[trl])")

from prefmatch.llm.battery import trl as trl_battery  # noqa: E402
from prefmatch.llm.integrations.trl import regularizer_from_config  # noqa: E402

pytestmark = pytest.mark.trl


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """TRL's trainers initialise accelerate's process-wide state with their own settings; reset it
    so that the next test's trainer (TRL's or prefmatch's) starts from a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", trl_battery.CASES, ids=lambda c: c.id)
def test_trl_battery(case):
    r = trl_battery.run_case(case)
    assert r["tv"] <= trl_battery.TV_TOL, r
    assert r["tv_at_start"] > 10 * trl_battery.TV_TOL  # the problem is not solved at the start
    if case.trainer == "trl-grpo" and not case.bias_correction:
        # k3 alone in the loss optimizes the forward KL: far from the reverse-KL optimum TRL's docs name
        assert r["tv_to_kl_optimum"] > 5 * trl_battery.TV_TOL, r


def test_quick_grpo_case_reaches_the_optimum():
    """One GRPO run in the default suite: the maximum-entropy regularizer (no reference model)."""
    r = trl_battery.run_case(trl_battery.TRLCase("grpo", "maxent", steps=100))
    assert r["placement"] == "reward"
    assert r["tv"] <= trl_battery.TV_TOL, r


@pytest.mark.parametrize("name,params,beta,match", [
    ("kl", {"estimator": "k2"}, 0.1, "estimator"),
    ("kl", {}, 0.0, "beta"),
    ("kl", {"beta": 0.2}, 0.1, "beta"),
    ("nope", {}, 0.1, "regularizer"),
    ("cpm", {"alpha": 2.0}, 0.1, "alpha"),
])
def test_bad_arguments_are_one_line_errors(name, params, beta, match):
    with pytest.raises(ValueError, match=match) as e:
        regularizer_from_config(name, params, beta)
    assert "\n" not in str(e.value)


def test_placement_is_the_grad_checks_table():
    assert regularizer_from_config("cpm", {"alpha": 0.3}, 0.1)[1] == "reward"
    assert regularizer_from_config("multi_rkl", {"weights": [0.5, 0.5]}, 0.1)[1] == "reward"
    assert regularizer_from_config("fdiv", {"f": "chi2"}, 0.1)[1] == "loss"
    assert regularizer_from_config("kl", {"estimator": "k3"}, 0.1)[1] == "loss"
    reg, _ = regularizer_from_config("pm", {"beta": 0.3}, 0.0)  # β given once, in the parameters
    assert reg.beta == 0.3


def test_reference_models_are_checked(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    dirs, _ = trl_battery.build_problem(tmp_path)
    model, tok = AutoModelForCausalLM.from_pretrained(dirs[0]), AutoTokenizer.from_pretrained(dirs[0])
    args = GRPOConfig(output_dir=str(tmp_path / "o"), beta=0.1, use_cpu=True, report_to=[], scale_rewards="none",
                      per_device_train_batch_size=8, num_generations=8, max_completion_length=1)
    kw = dict(model=model, reward_funcs=lambda completions, **k: [0.0] * len(completions), args=args,
              processing_class=tok)
    with pytest.raises(ValueError, match="ref_model: regularizer 'multi_rkl' with 2 weights needs a list of 2"):
        PMGRPOTrainer(**kw, regularizer="multi_rkl", regularizer_params={"weights": [0.5, 0.5]}, ref_model=model)
    with pytest.raises(ValueError, match="ref_model: regularizer 'maxent' uses no reference model"):
        PMGRPOTrainer(**kw, regularizer="maxent", ref_model=model)
    other = AutoModelForCausalLM.from_pretrained(dirs[0])
    other.resize_token_embeddings(other.get_output_embeddings().weight.shape[0] + 7)
    with pytest.raises(ValueError, match=r"ref_model\[1\]: its vocabulary has \d+ tokens, the policy's \d+") as e:
        PMGRPOTrainer(**kw, regularizer="multi_rkl", regularizer_params={"weights": [0.5, 0.5]},
                      ref_model=[AutoModelForCausalLM.from_pretrained(dirs[0]), other])
    assert "\n" not in str(e.value)


def test_docs_example_runs():
    """The runnable example of docs/integrations.md, as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "integrations.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith("# runnable example")]
    assert len(blocks) == 1
    ns: dict = {}
    exec(compile(blocks[0], "docs/integrations.md", "exec"), ns)  # noqa: S102 - the docs' own code
    assert ns["trainer"].placement == "reward" and ns["trainer"].reg.name == "cpm"
    assert ns["trainer"].state.global_step == 2


def _grpo_args(tmp_path, **kw):
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **kw)


def test_trl_defaults_are_refused_in_one_line_and_the_exact_settings_accepted(tmp_path):
    """A user who swaps GRPOTrainer for PMGRPOTrainer and keeps TRL's defaults (scale_rewards='group',
    loss_type='dapo') gets one line naming the field; scale_rewards='none' is exact with every affine
    regularizer, and a pathwise term also needs loss_type='dr_grpo'."""
    from prefmatch.llm.integrations.trl import check_trl_config

    args = _grpo_args(tmp_path)
    assert (args.scale_rewards, args.loss_type) == ("group", "dapo")  # TRL's defaults
    for name, params in (("kl", {}), ("pm", {}), ("cpm", {"alpha": 0.2}), ("maxent", {})):
        _, placement = regularizer_from_config(name, params, 0.1)
        with pytest.raises(ValueError, match=r"^scale_rewards: must be 'none' .*got 'group'$"):
            check_trl_config(args, placement)
        check_trl_config(_grpo_args(tmp_path, scale_rewards="none"), placement)  # dapo: exact here
    _, placement = regularizer_from_config("fdiv", {"f": "chi2"}, 0.1)
    with pytest.raises(ValueError, match=r"^loss_type: must be 'dr_grpo' .*got 'dapo'$"):
        check_trl_config(_grpo_args(tmp_path, scale_rewards="none"), placement)
    check_trl_config(_grpo_args(tmp_path, loss_type="dr_grpo", scale_rewards="none"), placement)


@pytest.mark.parametrize("field,value", [
    ("top_p", 0.7), ("top_k", 5), ("min_p", 0.1), ("repetition_penalty", 1.2), ("num_iterations", 2),
    ("mask_truncated_completions", True), ("top_entropy_quantile", 0.2), ("entropy_coef", 0.01),
    ("importance_sampling_level", "sequence"), ("off_policy_mask_threshold", 0.5), ("loss_type", "cispo"),
])
def test_grpo_settings_that_cannot_be_exact_are_refused_in_one_line(tmp_path, field, value):
    from prefmatch.llm.integrations.trl import check_trl_config

    kw = {field: value}
    if field == "importance_sampling_level":
        kw["loss_type"] = "grpo"  # TRL itself refuses sequence-level ratios with token-count loss types
    kw.setdefault("scale_rewards", "none")
    with pytest.raises(ValueError) as e:
        check_trl_config(_grpo_args(tmp_path, **kw), "reward")
    msg = str(e.value)
    assert msg.startswith(f"{field}: must be ") and f"got {value!r}" in msg and "\n" not in msg


def test_rloo_clipping_and_pathwise_normalization_are_refused(tmp_path):
    from trl import RLOOConfig

    from prefmatch.llm.integrations.trl import check_trl_config

    with pytest.raises(ValueError, match=r"^reward_clip_range: must be None"):
        check_trl_config(RLOOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True,
                                    reward_clip_range=(-5.0, 5.0)), "reward")
    norm = RLOOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, normalize_advantages=True)
    check_trl_config(norm, "reward")
    with pytest.raises(ValueError, match=r"^normalize_advantages: must be False"):
        check_trl_config(norm, "loss")


# ---- TRL without surprises: the reference TRL would build, its metrics, its versions, the mirrored code checked

def _tiny(tmp_path, n_refs=1, **cfg):
    """The battery's tiny problem: (model dirs, tokenizer, a GRPOConfig/RLOOConfig factory, dataset, reward)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    dirs, reward = trl_battery.build_problem(tmp_path, n_refs=n_refs)
    tok = AutoTokenizer.from_pretrained(dirs[0])

    def task_reward(completions, completion_ids, **kw):
        return [float(reward[ids[0]]) if ids else 0.0 for ids in completion_ids]

    return dirs, tok, Dataset.from_dict({"prompt": ["w1"] * 64}), task_reward


def _config(tmp_path, cls="grpo", **kw):
    from trl import GRPOConfig, RLOOConfig

    base = dict(output_dir=str(tmp_path / "out"), beta=0.5, num_generations=4, per_device_train_batch_size=8,
                max_completion_length=3, max_steps=1, use_cpu=True, report_to=[], save_strategy="no",
                logging_steps=1, disable_tqdm=True, bf16=False)
    base.update(kw)
    if cls == "grpo":
        base.setdefault("scale_rewards", "none")
        return GRPOConfig(**base)
    return RLOOConfig(**base)


def _n_params(*modules):
    seen = {}
    for m in modules:
        if m is not None:
            for p in m.parameters():
                seen[id(p)] = p.numel()
    return sum(seen.values())


def test_peft_reference_is_the_policy_with_its_adapter_disabled(tmp_path):
    """peft_config: no second copy of the model (the parameters the trainer holds are the policy's and its
    adapter's), and the reference log-probs are the base model's while the trained policy's differ."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    dirs, tok, ds, task_reward = _tiny(tmp_path)
    base = AutoModelForCausalLM.from_pretrained(dirs[0])
    n_base = _n_params(base)
    trainer = PMGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(dirs[0]), reward_funcs=task_reward,
                            args=_config(tmp_path, max_steps=2, learning_rate=0.1), train_dataset=ds,
                            processing_class=tok, regularizer="kl",
                            peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], lora_dropout=0.0))
    n_adapter = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert n_adapter > 0
    assert trainer.ref_model is None and trainer._pm_refs == []
    assert _n_params(trainer.model, trainer.ref_model, *trainer._pm_refs) == n_base + n_adapter
    trainer.train()
    ids = torch.tensor([[1, 2, 3, 4]])
    attn = torch.ones_like(ids)
    with torch.no_grad():
        ref = trainer._pm_reference_logps(ids, attn, 3, 1)[0]
        pol = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, 3, batch_size=1)[0]
        want = torch.log_softmax(base(input_ids=ids).logits[:, -4:-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(ref, want, atol=1e-5)
    assert (pol - want).abs().max() > 1e-3  # the adapter was trained: the reference is not the policy


def test_path_references_load_with_the_policys_init_kwargs(tmp_path):
    """A reference given as a path gets the policy's model_init_kwargs, dtype and attention implementation (as
    TRL loads its own reference); the default reference is TRL's own, loaded with those kwargs."""
    import torch
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    dirs, tok, ds, task_reward = _tiny(tmp_path, n_refs=2)
    policy = AutoModelForCausalLM.from_pretrained(dirs[0], attn_implementation="eager", dtype=torch.bfloat16)
    t = PMGRPOTrainer(model=policy, reward_funcs=task_reward, args=_config(tmp_path), train_dataset=ds,
                      processing_class=tok, regularizer="kl", ref_model=str(dirs[1]))
    ref = t.accelerator.unwrap_model(t._pm_refs[0])
    assert ref.dtype == torch.bfloat16 and ref.config._attn_implementation == "eager"
    t = PMGRPOTrainer(model=str(dirs[0]), reward_funcs=task_reward,
                      args=_config(tmp_path, model_init_kwargs={"dtype": "bfloat16"}), train_dataset=ds,
                      processing_class=tok, regularizer="multi_rkl", regularizer_params={"weights": [0.5, 0.5]},
                      ref_model=[str(d) for d in dirs])
    assert [t.accelerator.unwrap_model(r).dtype for r in t._pm_refs] == [torch.bfloat16] * 2
    t = PMGRPOTrainer(model=str(dirs[0]), reward_funcs=task_reward,
                      args=_config(tmp_path, model_init_kwargs={"dtype": "bfloat16"}), train_dataset=ds,
                      processing_class=tok, regularizer="cpm", regularizer_params={"alpha": 0.2})
    assert t._pm_refs == [] and t.ref_model is not None and t.ref_model.dtype == torch.bfloat16
    assert t.beta == 0.0  # TRL's own KL term off; the regularizer's β is the config's
    assert t.reg.beta == 0.5


@pytest.mark.parametrize("own_reference", [False, True])
def test_sync_ref_model_works_with_any_beta(tmp_path, own_reference):
    """sync_ref_model=True with beta=0.5 (TRL's check wanted beta 0 when the integration zeroed it): with
    mixup α = 1 every step, the reference is the policy after each step, TRL's or the caller's reference."""
    import torch
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    dirs, tok, ds, task_reward = _tiny(tmp_path)
    args = _config(tmp_path, sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=1.0,
                   learning_rate=0.1, max_steps=2)
    ref = AutoModelForCausalLM.from_pretrained(dirs[0]) if own_reference else None
    t = PMGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(dirs[0]), reward_funcs=task_reward, args=args,
                      train_dataset=ds, processing_class=tok, regularizer="kl", ref_model=ref)
    before = next(iter(t.accelerator.unwrap_model(t.model).lm_head.parameters())).detach().clone()
    t.train()
    ref_model = t._pm_refs[0] if own_reference else t.ref_model
    pol = dict(t.accelerator.unwrap_model(t.model).named_parameters())
    for name, p in t.accelerator.unwrap_model(ref_model).named_parameters():
        assert torch.equal(p, pol[name]), name
    assert not torch.equal(before, pol["lm_head.weight"])  # the policy moved, so the sync did something


def test_sync_ref_model_without_one_reference_is_refused_in_one_line(tmp_path):
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    dirs, tok, ds, task_reward = _tiny(tmp_path)
    with pytest.raises(ValueError, match=r"^sync_ref_model: must be False with regularizer 'maxent'"):
        PMGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(dirs[0]), reward_funcs=task_reward,
                      args=_config(tmp_path, sync_ref_model=True), train_dataset=ds, processing_class=tok,
                      regularizer="maxent")


@pytest.mark.parametrize("cls", ["grpo", "rloo"])
def test_trls_kl_metric_keeps_its_meaning(tmp_path, cls):
    """TRL logs ``kl`` (GRPO: the per-token mean of k3 = e^(ref−lp) − (ref−lp) − 1; RLOO: of lp − ref) beside
    ``regularizer/psi_mean``; the value is TRL's formula, written out here, on the batch's tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.integrations.trl import PMGRPOTrainer, PMRLOOTrainer

    dirs, tok, ds, task_reward = _tiny(tmp_path, n_refs=2)
    Trainer = PMGRPOTrainer if cls == "grpo" else PMRLOOTrainer
    t = Trainer(model=AutoModelForCausalLM.from_pretrained(dirs[0]), reward_funcs=task_reward,
                args=_config(tmp_path, cls), train_dataset=ds, processing_class=tok, regularizer="cpm",
                regularizer_params={"alpha": 0.2}, ref_model=AutoModelForCausalLM.from_pretrained(dirs[1]))
    t.train()
    logged = [h for h in t.state.log_history if "kl" in h]
    assert logged and logged[0]["kl"] > 1e-4 and "regularizer/psi_mean" in logged[0]
    g = torch.Generator().manual_seed(0)
    lp, ref = -3 * torch.rand(4, 5, generator=g, dtype=torch.float64), -3 * torch.rand(4, 5, generator=g,
                                                                                      dtype=torch.float64)
    m = torch.tensor([[1, 1, 1, 0, 0]] * 4, dtype=torch.float64)
    t._metrics["train"].clear()
    t._pm_log_kl(lp, ref, m)
    d = ref - lp
    per_token = torch.exp(d) - d - 1 if cls == "grpo" else lp - ref
    assert t._metrics["train"]["kl"][0] == pytest.approx(float((per_token * m).sum() / m.sum()), rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_log_probs_come_from_generation(tmp_path, temperature):
    """No forward of the sampling policy outside TRL's training step: ψ's log-probs are the ones ``generate``
    sampled with (TRL's ``sampling_per_token_logps``), equal to a forward pass's at the sampling temperature
    on every completion token."""
    import torch
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.integrations import trl as pm_trl
    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    if temperature != 1.0 and pm_trl.add_fused_lm_head is None:
        pytest.skip("TRL before 1.15 scores the reference at the sampling temperature: temperature != 1 is refused there")
    dirs, tok, ds, task_reward = _tiny(tmp_path)
    seen = {}

    class Spy(PMGRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            calls = []
            orig = self._get_per_token_logps_and_entropies

            def spy(model, *a, **k):
                calls.append(model)
                return orig(model, *a, **k)

            self._get_per_token_logps_and_entropies = spy
            try:
                out = super()._generate_and_score_completions(inputs)
            finally:
                del self._get_per_token_logps_and_entropies
            seen.update(out=out, calls=calls)
            return out

    t = Spy(model=AutoModelForCausalLM.from_pretrained(dirs[0]), reward_funcs=task_reward,
            args=_config(tmp_path, temperature=temperature), train_dataset=ds, processing_class=tok, regularizer="kl",
            ref_model=AutoModelForCausalLM.from_pretrained(dirs[0]))
    t.train()
    out = seen["out"]
    assert all(m is not t.model for m in seen["calls"]) and len(seen["calls"]) == 1  # the reference only
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attn = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    m = out["completion_mask"].bool()
    assert m.sum() > out["completion_ids"].size(0)  # some completions have several tokens
    with torch.no_grad():  # the policy before the step: a fresh copy of the initial model
        fresh = AutoModelForCausalLM.from_pretrained(dirs[0])
        k = out["completion_ids"].size(1)
        logits = fresh(input_ids=ids, attention_mask=attn).logits[:, -k - 1:-1]
        want = torch.log_softmax(logits / temperature, -1).gather(-1, out["completion_ids"][..., None]).squeeze(-1)
    assert torch.allclose(out["sampling_per_token_logps"][m], want[m], atol=1e-5)


def test_a_changed_trl_advantage_computation_stops_training(tmp_path, monkeypatch):
    """The GRPO/RLOO advantage replica ψ joins is checked against TRL's own result at every step."""
    from transformers import AutoModelForCausalLM

    from prefmatch.llm.integrations.trl import PMGRPOTrainer

    dirs, tok, ds, task_reward = _tiny(tmp_path)
    replica = PMGRPOTrainer._pm_advantages
    monkeypatch.setattr(PMGRPOTrainer, "_pm_advantages", lambda self, r, g: (replica(self, r, g)[0] * 1.01, None))
    t = PMGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(dirs[0]), reward_funcs=task_reward,
                      args=_config(tmp_path), train_dataset=ds, processing_class=tok, regularizer="maxent")
    with pytest.raises(RuntimeError, match=r"computes GRPOTrainer's advantages differently"):
        t.train()


def test_trl_versions_outside_the_supported_range_are_refused_in_one_line():
    import tomllib
    from pathlib import Path

    from prefmatch.llm.integrations.trl import SUPPORTED_TRL, TESTED_TRL_VERSIONS, check_trl_version

    for v in TESTED_TRL_VERSIONS + ("1.14.2",):
        check_trl_version(v)
    for v in ("1.11.0", "1.17.0", "0.29.1"):
        with pytest.raises(ValueError, match=rf"^trl: prefmatch's TRL trainers support trl>=.*; this is trl {v}$"):
            check_trl_version(v)
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["optional-dependencies"]["trl"] == [f"trl{SUPPORTED_TRL}"]


def test_the_private_trl_methods_overridden_exist_with_the_signatures_used():
    """Each TRL method the trainers override (each documented with the TRL code it hooks into) is still
    there with the parameters the overrides pass on: a TRL that renames or reshapes one fails here."""
    import inspect

    from trl import GRPOTrainer, RLOOTrainer

    def params(cls, name):
        return list(inspect.signature(getattr(cls, name)).parameters)

    for cls in (GRPOTrainer, RLOOTrainer):
        assert params(cls, "_calculate_rewards") == ["self", "inputs", "prompts", "completions", "completion_ids_list"]
        assert params(cls, "_generate_and_score_completions")[:2] == ["self", "inputs"]
        assert params(cls, "_get_per_token_logps_and_entropies")[:2] == ["self", "model"]
        assert params(cls, "_compute_loss") == ["self", "model", "inputs"]
    assert params(GRPOTrainer, "_generate_single_turn")[:2] == ["self", "prompt_ids"]
