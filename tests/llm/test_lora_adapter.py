"""LoRA runs save the adapter (peft format) beside the merged model, and PPO's reference is the
base model with the adapter disabled, not a second copy of the weights."""
from __future__ import annotations

from pathlib import Path



def test_lora_reference_is_the_adapter_disabled_policy_and_the_adapter_is_saved(tmp_path, tiny, ppo_overrides):
    import torch
    from peft import PeftModel

    from prefmatch.llm.config import load_config
    from prefmatch.llm.metrics import sequence_logprobs_ids
    from prefmatch.llm.models import ADAPTER_DIR, count_parameters, load_causal_lm
    from prefmatch.llm.train.ppo import PPOConfig, PPOTrainer

    cfg = load_config(PPOConfig, overrides=ppo_overrides(tmp_path / "lora", lora=True, lora_r=4, lr=5e-2, steps=2))
    tr = PPOTrainer(cfg, quiet=True)
    ref = tr.refs[0]
    assert sum(p.numel() for p in ref.parameters()) == 0  # no second copy of the weights
    sft = load_causal_lm(tiny["sft"]).eval()
    saved = count_parameters(sft)
    assert saved > 0
    prompts, responses = [[5, 6, 7], [8, 9]], [[10, 11, 12], [13]]
    want = sequence_logprobs_ids(sft, prompts, responses, pad_id=0, device="cpu")
    for _ in range(2):
        tr.step()
        got = sequence_logprobs_ids(ref, prompts, responses, pad_id=0, device="cpu")
        assert torch.allclose(got, want, atol=1e-5), (got, want)  # the reference stays the initial policy
    policy_lp = sequence_logprobs_ids(tr.policy.lm, prompts, responses, pad_id=0, device="cpu")
    assert not torch.allclose(policy_lp, want, atol=1e-4)  # while the policy moved
    out = Path(tr.save_final())
    assert (out / ADAPTER_DIR / "adapter_config.json").is_file()
    merged = load_causal_lm(out).eval()
    with_adapter = PeftModel.from_pretrained(load_causal_lm(tiny["sft"]), str(out / ADAPTER_DIR)).eval()
    ids = torch.tensor([[5, 6, 7, 10, 11, 12]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits, atol=1e-4)


def test_sft_lora_saves_the_adapter(tmp_path, tiny):
    from prefmatch.llm.config import load_config
    from prefmatch.llm.models import ADAPTER_DIR
    from prefmatch.llm.train.sft import SFTConfig, train_sft

    res = train_sft(load_config(SFTConfig, overrides=dict(model=tiny["base"], data=tiny["data"], out=str(tmp_path / "s"),
                                                          lora=True, steps=1, batch_size=4, max_prompt_len=32,
                                                          max_response_len=8)), quiet=True)
    assert (Path(res["out"]) / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    assert (Path(res["out"]) / "config.json").is_file()
