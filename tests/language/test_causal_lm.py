"""The local causal-LM target: loading from a directory, budgets, chat templates, token accounting."""

import json

import pytest
from tiny import CHAT_TEMPLATE, tiny_model

from assay.errors import BudgetExceeded, InputError
from assay.targets import load_target
from assay.targets.causal_lm import CausalLMTarget, cache_root, convert_gguf, is_causal_lm_dir


@pytest.fixture
def saved(tmp_path, tok):
    model = tiny_model(seed=11)
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    return tmp_path / "lm", model


def test_directory_loads_offline_as_a_causal_lm_target(saved, tok):
    path, model = saved
    assert is_causal_lm_dir(path)
    t = load_target(str(path), device="cpu", query_budget=100, token_budget=10_000,
                    llm_options={"max_batch_size": 4, "system_prompt": "be terse"})
    assert isinstance(t, CausalLMTarget) and t.engine.max_batch_size == 4
    ref = CausalLMTarget(model, tok, device="cpu")
    prompts = ["alice: my", "the quick"]
    assert [c.text for c in t.generate(prompts, max_new_tokens=6)] == [c.text for c in ref.generate(prompts, max_new_tokens=6)]
    d = t.describe()
    assert d["kind"] == "causal-lm" and d["chat_template"] and d["parameters"] == sum(p.numel() for p in model.parameters())
    same = CausalLMTarget(model, tok, device="cpu", system_prompt="be terse")
    assert t.fingerprint() == same.fingerprint() != ref.fingerprint()  # the system prompt changes the model's answers
    assert ref.fingerprint() != CausalLMTarget(tiny_model(seed=12), tok).fingerprint()
    with pytest.raises(InputError, match="does not apply to a local model"):
        load_target(str(path), llm_options={"api_key_env": "X"})


def test_tokens_and_queries_are_counted_exactly_and_budgets_hold(tok):
    t = CausalLMTarget(tiny_model(seed=13), tok, device="cpu")
    out = t.generate(["alice: my", "bob"], max_new_tokens=5)
    expected = sum(c.prompt_tokens + c.completion_tokens + (c.finish_reason == "eos") for c in out)
    assert t.queries == 2 and t.tokens == expected
    lp = t.logprobs(["", "alice:"], ["the cat", " my email"])
    assert t.queries == 4
    # raw-text prompts start with the BOS token (add_bos): the empty prompt is that token alone
    assert t.tokens == expected + (1 + len(tok.encode("the cat"))) + (1 + len(tok.encode("alice:")) + len(tok.encode(" my email")))
    assert [s.tokens for s in lp][1] == [tok.decode([i]) for i in tok.encode(" my email")]
    tight = CausalLMTarget(tiny_model(seed=13), tok, device="cpu", token_budget=20)
    passes = tight.engine.forward_passes
    with pytest.raises(BudgetExceeded, match="token budget"):
        tight.generate(["alice: my email is", "bob"], max_new_tokens=10)
    assert tight.engine.forward_passes == passes and tight.queries == 2  # refused before any work
    q = CausalLMTarget(tiny_model(seed=13), tok, device="cpu", query_budget=1)
    with pytest.raises(BudgetExceeded, match="query budget"):
        q.generate(["a", "b"])
    assert q.spent() == {"queries": 0, "tokens": 0}
    q.restore_spent({"queries": 1, "tokens": 7})
    with pytest.raises(BudgetExceeded):
        q.generate(["a"])


def test_chat_prompts_use_the_tokenizers_template(tok):
    t = CausalLMTarget(tiny_model(seed=14), tok, device="cpu", system_prompt="sys")
    ids = t.render("hello", chat=True)
    text = tok.apply_chat_template([{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}],
                                   tokenize=False, add_generation_prompt=True)
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert text.endswith("<|im_start|>assistant\n") and CHAT_TEMPLATE
    msgs = [{"role": "system", "content": "own"}, {"role": "user", "content": "hi"}]
    assert tok.decode(t.render(msgs, chat=False)).startswith("<|im_start|>system\nown")
    assert t.render("", chat=False) == [tok.bos_token_id]
    no_template = CausalLMTarget(tiny_model(seed=14), _without_template(tok), device="cpu")
    with pytest.raises(InputError, match="no chat template"):
        no_template.generate(["hi"], chat=True)


def _without_template(tok):
    import copy

    t = copy.deepcopy(tok)
    t.chat_template = None
    return t


def test_gguf_errors_and_cache_location(tmp_path, monkeypatch):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf")
    with pytest.raises(InputError, match="not a GGUF file"):
        convert_gguf(fake, tmp_path / "cache")
    with pytest.raises(InputError, match="does not exist"):
        load_target(str(tmp_path / "missing.gguf"))
    monkeypatch.setenv("ASSAY_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("ASSAY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "assay"


def test_classifier_directories_still_load_as_classifiers(tmp_path):
    cfg = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert not is_causal_lm_dir(tmp_path)
