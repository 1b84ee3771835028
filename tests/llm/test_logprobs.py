"""Teacher-forced sequence log-probs: batched (left or right padding) = one sequence at a time."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sequence_logprobs_match_unbatched_prefix_loop(tmp_path, arch):
    from prefmatch.llm.data import encode_prompt, encode_response, pad_batch
    from prefmatch.llm.models import logprobs_from_logits
    from prefmatch.llm.metrics import sequence_logprobs
    from prefmatch.llm.models import init_model, load_causal_lm, model_inputs
    from prefmatch.llm.tokenizer import load_tokenizer

    d = init_model(tmp_path / arch, "tiny", arch=arch, seed=5)
    model, tok = load_causal_lm(d).eval(), load_tokenizer(d)
    prompts = ["\n\nHuman: hi\n\nAssistant:", "\n\nHuman: What is your favourite colour today?\n\nAssistant:"]
    responses = [" I like blue.", " No."]
    batched = sequence_logprobs(model, tok, prompts, responses)
    # independent: each sequence alone, one next-token distribution per prefix
    for b, (p, r) in enumerate(zip(prompts, responses)):
        pi, ri = encode_prompt(tok, p, 256), encode_response(tok, r, 256)
        total = 0.0
        with torch.no_grad():
            for t in range(len(ri)):
                ids = torch.tensor([pi + ri[:t]])
                logits = model(input_ids=ids).logits[0, -1].double()
                total += float(torch.log_softmax(logits, -1)[ri[t]])
        assert float(batched[b]) == pytest.approx(total, abs=1e-4)
        # and left padding (as in PPO rollouts) gives the same numbers
        seqs = [encode_prompt(tok, q, 256) + encode_response(tok, s, 256) for q, s in zip(prompts, responses)]
        ids, mask = pad_batch(seqs, tok.pad_token_id, side="left")
        with torch.no_grad():
            lp = logprobs_from_logits(model(**model_inputs(model, ids, mask)).logits[:, :-1], ids[:, 1:])
        left = float(lp[b, -len(ri):].sum())
        assert left == pytest.approx(total, abs=1e-4)
