"""The DPO trainer's convergence battery: the real DPOTrainer.step on tabular policies, trained on
Bradley–Terry pairs, lands within TV 0.01 of each affine regularizer's RLHF optimum."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from prefmatch.llm.battery import dpo as B  # noqa: E402
from prefmatch.llm.train.rewards import build_regularizer  # noqa: E402
from prefmatch.theory.dpo import dpo_regularizers  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tabular tensors (tests/llm/conftest.py)


def _check(row):
    assert row["tv"] <= B.TV_TOL, row
    assert row["tv_at_start"] > 3 * B.TV_TOL, row  # the start is far from the optimum: the test can fail
    assert row["tv_sampling"] <= B.TV_TOL, row  # the pairs pin the optimum down within the tolerance too


@pytest.mark.parametrize("case", B.QUICK, ids=lambda c: c.id)
def test_quick_dpo_battery_reaches_the_optimum(case):
    _check(B.run_case(case))


@pytest.mark.slow
@pytest.mark.parametrize("case", B.all_cases(), ids=lambda c: c.id)
def test_full_dpo_battery(case):
    _check(B.run_case(case))


def test_every_dpo_regularizer_and_cpm_level_is_in_the_battery():
    covered = {(c.regularizer, getattr(build_regularizer(c.regularizer, c.params, c.beta), "level", None), c.length)
               for c in B.all_cases()}
    for name in dpo_regularizers():
        levels = ("sequence", "token") if name == "cpm" else (None,)
        for level in levels:
            for T in (1, 2, 3):
                assert (name, level, T) in covered, (name, level, T)
