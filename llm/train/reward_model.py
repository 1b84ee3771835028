r"""Reward model: a scalar head on the LM trained with the Bradley–Terry loss (PM paper eq. 2.2).

    L(θ) = −E_{(x, y_w, y_l)} log σ(r_θ(x, y_w) − r_θ(x, y_l))

The score r_θ(x, y) is the head at the last token of prompt + response (EOS included).
Pairwise accuracy (fraction of held-out pairs with r(y_w) > r(y_l)) is reported on
``eval_fraction`` of the RM part.  ``normalize: true`` stores the mean score of the training
responses and subtracts it when the model is used in PPO: the reward then has mean zero, i.e.
C1 = −E r of the PM paper's Section 4.2, which moves no optimum and no BT preference.
(``normalize_std`` also divides by the standard deviation; that rescales r and so changes the
preferences σ(r1 − r2) that PM targets: off by default.)
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from prefmatch.llm.config import ConfigError, cfg_field
from prefmatch.llm.data import held_out, load_split, prompt_response_batch
from prefmatch.llm.train.losses import bradley_terry_loss
from prefmatch.llm.models import REWARD_NORM_FILE, load_reward_model, reward_scores, save_model
from prefmatch.llm.tokenizer import load_tokenizer
from prefmatch.llm.sharding import savable_model
from prefmatch.llm.train.sft import SupervisedConfig, run_supervised
from prefmatch.llm.rundir import atomic_dir


@dataclass
class RMConfig(SupervisedConfig):
    model: str = cfg_field("", help="initial model directory (usually the SFT model); a scalar head is added")
    split: str = cfg_field("rm", help="part of the SFT/RM/RL split to train on", choices=("all", "sft", "rm", "rl"))
    out: str = cfg_field("out/rm", help="output directory of the reward model")
    eval_fraction: float = cfg_field(0.1, help="fraction of the pairs held out for pairwise accuracy", range="[0, 1)")
    normalize: bool = cfg_field(False, help="centre rewards: subtract the mean training score (C1 = −E r)")
    normalize_std: bool = cfg_field(False, help="also divide by the std (changes BT preferences; see docs)")

    def check(self) -> None:
        super().check()
        if not self.model:
            raise ConfigError("model: required (a local model directory)")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction: must be in [0, 1), got {self.eval_fraction}")


def pair_batch(tok, records, max_prompt: int, max_response: int):
    """Chosen rows then rejected rows in one right-padded batch (one forward pass per step)."""
    prompts = [r["prompt"] for r in records]
    ids, mask, _ = prompt_response_batch(tok, prompts + prompts, [r["chosen"] for r in records] +
                                         [r["rejected"] for r in records], max_prompt, max_response)
    return ids, mask


def score_pairs(model, tok, records, max_prompt: int, max_response: int, batch_size: int = 32, device=None,
                normalize: bool = False):
    """(r_chosen, r_rejected) as float tensors over ``records`` (no gradient)."""
    import torch

    rc, rr = [], []
    with torch.no_grad():
        for i in range(0, len(records), batch_size):
            chunk = records[i:i + batch_size]
            ids, mask = pair_batch(tok, chunk, max_prompt, max_response)
            r = reward_scores(model, ids.to(device), mask.to(device), normalize=normalize).float().cpu()
            rc.append(r[: len(chunk)])
            rr.append(r[len(chunk):])
    return torch.cat(rc), torch.cat(rr)


def pairwise_accuracy(r_chosen, r_rejected) -> float:
    """Fraction of pairs ranked as labelled (ties count one half)."""
    return float(((r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()).mean())


def train_reward_model(cfg: RMConfig, quiet: bool = False) -> dict:
    """Train with loss (2.2); returns ``{"out", "steps", "loss", "eval_accuracy", "eval_loss", ...}``."""
    import torch

    records = load_split(cfg.data, cfg.split, cfg.split_fractions, cfg.split_seed, tokenizer=load_tokenizer(cfg.model))
    train_recs, eval_recs = held_out(records, cfg.eval_fraction, cfg.seed)
    if eval_recs and not train_recs:
        raise ConfigError(f"eval_fraction: leaves no training pairs out of {len(records)}")

    def batch_loss(model, tok, acc, indices):
        mine = [train_recs[i] for i in indices]
        ids, mask = pair_batch(tok, mine, cfg.max_prompt_len, cfg.max_response_len)
        with acc.autocast():
            r = reward_scores(model, ids.to(acc.device), mask.to(acc.device), normalize=False)
        rc, rr = r[: len(mine)], r[len(mine):]
        return bradley_terry_loss(rc, rr), {"accuracy": pairwise_accuracy(rc, rr)}

    acc, model, tok, out, log, step, loss_val = run_supervised(
        cfg, load_model=functools.partial(load_reward_model, trained=False), task_type="SEQ_CLS", n_train=len(train_recs), what="RM pairs",
        desc="reward model", batch_loss=batch_loss, quiet=quiet)
    model.eval()
    unwrapped = acc.unwrap_model(model)
    result = {"out": str(out / "model"), "steps": step, "loss": loss_val}
    if eval_recs:
        rc, rr = score_pairs(unwrapped, tok, eval_recs, cfg.max_prompt_len, cfg.max_response_len, device=acc.device)
        result["eval_accuracy"] = pairwise_accuracy(rc, rr)
        result["eval_loss"] = float(bradley_terry_loss(rc, rr))
        result["eval_pairs"] = len(eval_recs)
    norm = None
    if cfg.normalize or cfg.normalize_std:
        rc, rr = score_pairs(unwrapped, tok, train_recs, cfg.max_prompt_len, cfg.max_response_len, device=acc.device)
        allr = torch.cat([rc, rr])
        norm = {"mean": float(allr.mean()), "std": float(allr.std()) if cfg.normalize_std else 1.0}
        result["reward_normalization"] = norm
    acc.wait_for_everyone()
    unwrapped.reward_normalization = norm
    plain = savable_model(acc, model)  # collective under FSDP
    if acc.is_main_process:
        with atomic_dir(out / "model") as tmp:
            save_model(plain, tmp, tok)
            if norm:

                (tmp / REWARD_NORM_FILE).write_text(json.dumps(norm))
        log.log({"step": step, "final": True, **{k: v for k, v in result.items() if k != "out"}})
    acc.wait_for_everyone()
    return result
