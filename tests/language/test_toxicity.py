"""The toxicity scorers (alt-profanity-check's model loaded through an allow-list, and a local
Hugging Face classifier directory built here) and the ``language.toxicity`` probe."""

import os
import pickle

import joblib
import numpy as np
import pytest
import torch
from scripted import ScriptedLM
from tiny import tiny_model, tiny_tokenizer

from assay.engine.context import ProbeContext
from assay.errors import InputError, UnsafeModelFile
from assay.metrics import toxicity as tox
from assay.probes.base import get_probe
from assay.targets.causal_lm import CausalLMTarget

TOXIC = ["you stupid idiot, shut up", "I hate you, you worthless moron", "go to hell you pathetic loser",
         "you are a dumb ugly idiot"]
CLEAN = ["thank you for your help today", "the weather is lovely this morning", "the meeting moved to friday",
         "she planted tomatoes in the garden"]


def test_profanity_check_model_separates_obvious_cases():
    s = tox.ProfanityCheckScorer()
    t, c = s(TOXIC), s(CLEAN)
    assert (t > 0.5).all() and (c < 0.5).all()
    assert s.name.startswith("alt-profanity-check") and "bag-of-words" in s.limits
    assert s([]).shape == (0,)


class _Boom:
    def __reduce__(self):
        return (os.makedirs, ("/tmp/assay-should-not-exist-xyz",))


def test_restricted_loader_refuses_foreign_classes(tmp_path):
    bad = tmp_path / "model.joblib"
    joblib.dump({"x": _Boom()}, bad)
    with pytest.raises(UnsafeModelFile, match="os.makedirs|posix.makedirs"):
        tox.restricted_joblib_load(bad, tox._PROFANITY_CLASSES)
    assert not os.path.exists("/tmp/assay-should-not-exist-xyz")
    (tmp_path / "vectorizer.joblib").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UnsafeModelFile):  # a data dir holding a tampered file is refused as a whole
        tox.ProfanityCheckScorer(tmp_path)


def _tiny_classifier(path, id2label, multi_label=False, steps=60):
    """A 1-layer BERT classifier over the tiny tokenizer, trained to tell TOXIC from CLEAN."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = tiny_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=len(id2label),
                     id2label=dict(enumerate(id2label)), label2id={v: k for k, v in enumerate(id2label)},
                     pad_token_id=tok.pad_token_id,
                     problem_type="multi_label_classification" if multi_label else "single_label_classification")
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    toxic_idx = next((i for i, n in enumerate(id2label) if n.lower() in ("toxic", "insult", "label_1")), 1)
    enc = tok(TOXIC + CLEAN, padding=True, return_tensors="pt")
    y = torch.tensor([toxic_idx] * len(TOXIC) + [1 - toxic_idx if toxic_idx < 2 else 0] * len(CLEAN))
    if multi_label:
        y = torch.nn.functional.one_hot(y, len(id2label)).float()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("labels,multi", [(["neutral", "toxic"], False), (["LABEL_0", "LABEL_1"], False),
                                          (["non-toxic", "insult", "threat"], True)])
def test_hf_directory_scorer_finds_the_toxic_label(tmp_path, labels, multi):
    d = _tiny_classifier(tmp_path / "clf", labels, multi)
    s = tox.load_scorer(str(d))
    assert isinstance(s, tox.HfToxicityScorer)
    want = {"neutral": [1], "LABEL_0": [1], "non-toxic": [1, 2]}[labels[0]]
    assert s.toxic == want and s.multi_label == multi
    t, c = s(TOXIC), s(CLEAN)
    assert t.min() > c.max()  # the trained separation comes through the scorer
    assert ((0 <= np.r_[t, c]) & (np.r_[t, c] <= 1)).all()


def test_hf_scorer_refuses_unlabelled_or_missing(tmp_path):
    d = _tiny_classifier(tmp_path / "clf", ["alpha", "beta", "gamma"], steps=1)
    with pytest.raises(InputError, match="which of the labels"):
        tox.HfToxicityScorer(d)
    with pytest.raises(InputError, match="no config.json"):
        tox.HfToxicityScorer(tmp_path)


def run_probe(target, data=None, **params):
    probe = get_probe("language.toxicity")(**params)
    assert probe.check(target, data) is None
    return probe.run(ProbeContext(target, data, seed=0))


def test_probe_rates_match_planted_behaviour():
    # chat replies are insults, continuations are polite: the two settings are told apart
    target = ScriptedLM(lambda p, chat: "you stupid idiot, shut up" if chat else " and then we had tea.")
    f = run_probe(target, max_new_tokens=8)
    chat, cont = f.metric("toxicity_rate[chat]"), f.metric("toxicity_rate[continuation]")
    assert chat.value == 1.0 and cont.value == 0.0
    assert 0.7 < chat.low < 1.0 == chat.high and cont.low == 0.0 < cont.high < 0.2  # exact intervals, 16 and 30 outputs
    assert f.metric("mean_toxicity[chat]").value > 0.9 > 0.1 > f.metric("mean_toxicity[continuation]").value
    caveat = next(e for e in f.evidence if e.title == "Scorer and its limits").data["text"]
    assert f.accounting["scorer"].startswith("alt-profanity-check") and "lower bound" in caveat
    assert f.accounting["modes"] == {"continuation": {"outputs": 30, "toxic": 0, "by_category": {
        "insult": 0, "profanity": 0, "identity": 0, "threat": 0, "harassment": 0}},
        "chat": {"outputs": 16, "toxic": 16, "by_category": {"insult": 4, "profanity": 3, "identity": 4, "threat": 2,
                                                            "harassment": 3}}}
    assert target.queries == 46


def test_probe_with_hf_scorer_samples_and_caps(tmp_path):
    d = _tiny_classifier(tmp_path / "clf", ["neutral", "toxic"])
    target = ScriptedLM(lambda p, chat: TOXIC[len(p) % 4] if "neighbour" in p else CLEAN[len(p) % 4])
    f = run_probe(target, scorer=str(d), modes=["continuation"], max_prompts=10, samples=2, temperature=1.0)
    assert f.accounting["scorer"].startswith("hf:clf") and target.queries == 20
    rate, prompt_rate = f.metric("toxicity_rate[continuation]"), f.metric("prompt_toxicity_rate[continuation]")
    assert rate.value == prompt_rate.value  # a prompt's two samples agree: the script is deterministic
    with pytest.raises(InputError, match="temperature > 0"):
        run_probe(target, samples=2)


def test_user_prompt_file_and_errors(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("text,mode\nsay something rude,chat\nThe idiot,continuation\n")
    target = ScriptedLM(lambda p, chat: "you moron" if chat else " was kind.")
    f = run_probe(target, prompts="file", prompts_file=str(csv))
    assert f.metric("toxicity_rate[chat]").value == 1.0 and f.metric("toxicity_rate[continuation]").value == 0.0
    csv.write_text("text,mode\nhello,shout\n")
    with pytest.raises(InputError, match="mode 'shout'"):
        run_probe(target, prompts_file=str(csv))
    with pytest.raises(InputError, match="does not exist"):
        run_probe(target, prompts_file=str(tmp_path / "nope.jsonl"))


def test_probe_runs_on_a_tiny_causal_lm():
    t = CausalLMTarget(tiny_model(seed=1), tiny_tokenizer(), device="cpu")
    f = run_probe(t, max_prompts=4, max_new_tokens=4)
    assert f.accounting["modes"]["continuation"]["outputs"] == 4 and f.accounting["modes"]["chat"]["outputs"] == 4
    assert t.queries == 8 and t.tokens > 0


def test_without_any_scorer_the_probes_say_so(monkeypatch):
    monkeypatch.setattr(tox, "profanity_check_dir", lambda: None)
    target = ScriptedLM(lambda p, chat: "x")
    assert "pip install alt-profanity-check" in get_probe("language.toxicity")().check(target, None)
    f = get_probe("language.bias")(axes=["age"], measures=["toxicity", "refusal"]).run(ProbeContext(target, None))
    assert "significant_gaps[refusal]" in {m.name for m in f.metrics}
    assert not any("toxicity" in m.name for m in f.metrics)
    assert any(w.startswith("toxicity: no scorer") for w in f.warnings)


def test_a_polite_model_passes_and_the_scorer_caveat_is_no_warning():
    f = run_probe(ScriptedLM(lambda p, chat: " and then we had tea."), max_new_tokens=8)
    f.apply_policy(get_probe("language.toxicity").default_policy)
    assert f.metric("toxicity_rate[chat]").value == 0.0 and f.verdict == "pass", (f.checks, f.warnings)
