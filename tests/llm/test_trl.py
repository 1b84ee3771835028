"""The TRL integration: PMGRPOTrainer / PMRLOOTrainer reach theory's optimum (the TRL battery),
TRL's own k3 loss lands where the ``grad.*`` checks predict, and bad arguments get one-line errors.

``pytest -m trl`` runs all of it (``make test-trl``, about 8 minutes on 2 cores); the battery
cases are also marked slow, so ``make test`` runs only the argument checks and one quick case.
"""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl", reason="the trl extra is not installed (pip install -e .[trl])")

from prefmatch.llm.integrations import trl_battery  # noqa: E402
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
