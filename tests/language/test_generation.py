"""The generation engine against transformers' own generate and forward passes, on tiny models."""

import pytest
import torch
from tiny import tiny_model

from assay.errors import InputError
from assay.generation import GenerationEngine, _joinable

PROMPTS = ["alice: my", "the quick brown fox jumps", "bob", "support: your order 12345 ships", "carol: call me at"]


def hf_greedy(model, ids, n, eos):
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=eos)
    new = out[0, len(ids):].tolist()
    return new[: new.index(eos)] if eos in new else new


def reference_logprobs(model, prompt, cont):
    with torch.no_grad():
        lp = model(torch.tensor([prompt + cont])).logits[0].log_softmax(-1)
    rows = lp[len(prompt) - 1: len(prompt) + len(cont) - 1]
    return rows.gather(1, torch.tensor(cont).view(-1, 1)).flatten(), rows


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_batched_greedy_equals_transformers_generate_one_at_a_time(tok, batch):
    model = tiny_model(seed=1)
    ids = [tok.encode(p) for p in PROMPTS]
    eng = GenerationEngine(model, tok, max_batch_size=batch)
    # an end-of-sequence token the model actually produces, so rows finish at different steps
    probe = eng.generate(ids, max_new_tokens=6)
    eos = probe[2].ids[3]
    eng = GenerationEngine(model, tok, max_batch_size=batch, eos_token_ids=[eos])
    out = eng.generate(ids, max_new_tokens=12)
    for p, g in zip(ids, out):
        assert g.ids == hf_greedy(model, p, 12, eos)
        assert g.finish_reason == ("eos" if len(g.ids) < 12 else "length")
        assert g.prompt_tokens == len(p)
    assert any(g.finish_reason == "eos" for g in out) and any(g.finish_reason == "length" for g in out)


def test_prompts_of_very_different_lengths_prefill_in_chunks_and_decode_together(tok):
    """One long prompt among short ones: the short ones are not padded to its length for the prompt
    pass (two chunks, their caches joined) and all of them decode in one batch; every answer equals
    transformers' generate on that prompt alone."""
    model = tiny_model(seed=1)
    long = tok.encode(" ".join(["the quick brown fox jumps over the lazy dog"] * 4))
    ids = [long] + [tok.encode(p) for p in PROMPTS]
    eng = GenerationEngine(model, tok, max_batch_size=8)
    assert len(eng._plan([len(p) for p in ids], 10)) == 1 and len(eng._plan([len(p) for p in ids])) == 2
    out = eng.generate(ids, max_new_tokens=10)
    assert eng.forward_passes == 2 + 9  # two prompt chunks, then nine decoding steps for all six rows
    _, past = eng._forward(keep=1, input_ids=torch.tensor([ids[1]]), use_cache=True)
    assert _joinable(past)  # the chunks' caches were joined (not the one-pass fallback)
    for p, g in zip(ids, out):
        assert g.ids == hf_greedy(model, p, 10, None)


def test_stop_strings_cut_the_text_and_end_the_row(tok):
    model = tiny_model(seed=2)
    ids = [tok.encode(p) for p in PROMPTS[:3]]
    eng = GenerationEngine(model, tok)
    free = eng.generate(ids, max_new_tokens=10)
    stop = free[0].text[3:5]
    assert stop
    out = eng.generate(ids, max_new_tokens=10, stop=[stop])
    assert out[0].finish_reason == "stop"
    assert stop not in out[0].text and free[0].text.startswith(out[0].text)
    assert len(out[0].ids) <= len(free[0].ids)


def test_sampling_is_seeded_per_prompt_whatever_the_batch(tok):
    model = tiny_model(seed=3)
    ids = [tok.encode(p) for p in PROMPTS]
    a = GenerationEngine(model, tok, max_batch_size=5).generate(ids, max_new_tokens=8, temperature=1.0, seed=7)
    b = GenerationEngine(model, tok, max_batch_size=1).generate(ids, max_new_tokens=8, temperature=1.0, seed=7)
    c = GenerationEngine(model, tok, max_batch_size=5).generate(ids, max_new_tokens=8, temperature=1.0, seed=8)
    assert [g.ids for g in a] == [g.ids for g in b]
    assert [g.ids for g in a] != [g.ids for g in c]
    greedy = GenerationEngine(model, tok).generate(ids, max_new_tokens=8)
    top1 = GenerationEngine(model, tok).generate(ids, max_new_tokens=8, temperature=0.7, top_k=1, seed=1)
    assert [g.ids for g in greedy] == [g.ids for g in top1]
    with pytest.raises(InputError):
        GenerationEngine(model, tok).generate(ids, temperature=-1)


@pytest.mark.parametrize("shared", [False, True])
def test_scores_equal_a_full_forward_pass(tok, shared):
    model = tiny_model(seed=4)
    conts = [tok.encode(c) for c in [" x y z", " the", " dog sat on the mat.", "!", " 493817"]]
    prompts = [tok.encode(PROMPTS[0])] * 5 if shared else [tok.encode(p) for p in PROMPTS]
    eng = GenerationEngine(model, tok, max_batch_size=2)
    out = eng.score(prompts, conts, stats=True)
    for p, c, s in zip(prompts, conts, out):
        ref, rows = reference_logprobs(model, p, c)
        assert torch.allclose(s.logprobs, ref, atol=1e-5)
        mean = (rows.exp() * rows).sum(-1)
        std = ((rows.exp() * rows.square()).sum(-1) - mean.square()).sqrt()
        assert torch.allclose(s.mean, mean, atol=1e-4) and torch.allclose(s.std, std, atol=1e-4)
    # the shared prompt runs once; every other pass only feeds continuations
    if shared:
        assert eng.forward_passes == 1 + 3


def test_out_of_memory_halves_the_batch_and_keeps_results(tok):
    model = tiny_model(seed=5)

    class Tight(torch.nn.Module):
        """Raises the out-of-memory error torch raises when a batch has more than two rows."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config, self.generation_config = inner, inner.config, inner.generation_config

        def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                    logits_to_keep=0):
            if input_ids.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep)

    ids = [tok.encode(p) for p in PROMPTS]
    want = GenerationEngine(model, tok, max_batch_size=8).generate(ids, max_new_tokens=6)
    eng = GenerationEngine(Tight(model), tok, max_batch_size=8)
    got = eng.generate(ids, max_new_tokens=6)
    assert [g.ids for g in got] == [g.ids for g in want]
    assert eng.max_batch_size <= 2 and eng.oom_retries >= 1
    conts = [tok.encode(" the end")] * 5
    assert all(torch.allclose(a.logprobs, b.logprobs, atol=1e-5) for a, b in
               zip(eng.score(ids, conts), GenerationEngine(model, tok).score(ids, conts)))


def test_bad_requests_are_one_line_errors(tok):
    eng = GenerationEngine(tiny_model(), tok)
    with pytest.raises(InputError, match="at least one token"):
        eng.generate([[]])
    with pytest.raises(InputError, match="one each"):
        eng.score([[1]], [[2], [3]])
    with pytest.raises(InputError, match="tokenizer"):
        GenerationEngine(tiny_model()).generate([[1, 2]], stop=["x"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_results_on_cuda(tok):
    model = tiny_model(seed=6)
    ids = [tok.encode(p) for p in PROMPTS]
    cpu = GenerationEngine(model, tok).generate(ids, max_new_tokens=8)
    gpu_model = tiny_model(seed=6).cuda()
    gpu = GenerationEngine(gpu_model, tok).generate(ids, max_new_tokens=8)
    assert [g.ids for g in cpu] == [g.ids for g in gpu]
    conts = [tok.encode(" the end")] * 5
    a = GenerationEngine(model, tok).score(ids, conts, stats=True)
    b = GenerationEngine(gpu_model, tok).score(ids, conts, stats=True)
    assert all(torch.allclose(x.logprobs, y.logprobs, atol=1e-4) for x, y in zip(a, b))
    s = GenerationEngine(gpu_model, tok).generate(ids, max_new_tokens=8, temperature=1.0, seed=3)
    assert len(s) == 5
