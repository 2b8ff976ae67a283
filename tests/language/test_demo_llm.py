"""assay demo llm: the corpus, the fine-tuning and the whole pipeline (on a tiny model by default;
the real SmolLM2 run is marked slow)."""

import json

import pytest
from tiny import tiny_model, tiny_tokenizer

from assay.data.demo_llm import COPIES, fine_tune, make_corpus
from assay.demos import run_llm_demo
from assay.metrics import pii
from assay.targets.causal_lm import CausalLMTarget


def test_corpus_plants_each_item_at_its_frequency():
    c = make_corpus(seed=3)
    again = make_corpus(seed=3)
    assert c.train == again.train and make_corpus(seed=4).train != c.train
    for item in c.planted:
        assert sum(item["line"] == t for t in c.train) == item["copies"]
        if item["kind"] != "canary":  # every fake item is valid for its detector (Luhn, IBAN checksum, ...)
            assert any(f.kind == item["kind"] and f.value == item["value"] for f in pii.detect(item["line"]))
    assert sorted(x.copies for x in c.data.canaries) == list(COPIES)
    assert not set(c.data.members) & set(c.data.non_members) and len(c.data.non_members) >= 100


def test_fine_tune_trains_only_the_last_blocks(tok):
    t = CausalLMTarget(tiny_model(seed=3, layers=3), tiny_tokenizer(), device="cpu")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    fp = t.fingerprint()
    info = fine_tune(t, ["hello there", "general kenobi"], epochs=2, train_blocks=1, lr=1e-2)
    after = t.model.state_dict()
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed and all(k.startswith(("model.layers.2.", "model.norm")) for k in changed)
    assert info["steps"] == 2 and t.fingerprint() != fp
    assert not any(p.requires_grad for p in t.model.parameters()) and not t.model.training


def test_demo_pipeline_on_a_tiny_model(tmp_path):
    """The demo's whole pipeline; a tiny model from scratch must learn the planted lines, so the
    frequent canaries leak from the fine-tuned model and none from the base."""
    t = CausalLMTarget(tiny_model(seed=0, hidden=64), tiny_tokenizer(), device="cpu")
    params = {"language.extraction": {"prefix_tokens": 12, "suffix_tokens": 8, "max_documents": 45},
              "language.canary": {"samples": 64},
              "language.membership": {"max_texts": 100},
              "language.pii": {"samples": 2, "prefix_tokens": 12, "suffix_tokens": 8, "max_documents": 45,
                               "temperature": 0.0},
              "language.injection": {"max_prompts": 6, "max_systems": 1, "max_new_tokens": 8, "adaptive_rounds": 1,
                                     "adaptive_seeds": 3, "attacker_tokens": 8},
              "language.jailbreak": {"max_requests": 2, "template_names": ["direct", "role-play"], "max_new_tokens": 4,
                                     "gcg_requests": 1, "gcg_steps": 2, "gcg_search_width": 8, "gcg_topk": 8},
              "language.toxicity": {"max_prompts": 2, "max_new_tokens": 4},
              "language.bias": {"axes": ["gender"], "max_templates": 2, "max_new_tokens": 4}}
    res = run_llm_demo(tmp_path, target=t, epochs=6, train_blocks=2, lr=3e-3, params=params, log=lambda m: None)
    ex = res["curves"]["extraction"]["series"]
    tuned = next(s for s in ex if s["name"] == "fine-tuned")
    base = next(s for s in ex if s["name"] == "base")
    assert base["y"] == [0.0] * len(COPIES)
    assert tuned["y"][-1] == 1.0  # 16 copies: extracted
    exp = {s["name"]: s["y"] for s in res["curves"]["exposure"]["series"]}
    assert exp["fine-tuned"][-1] > exp["base"][-1] + 3
    for name in ("base", "fine-tuned"):
        assert (tmp_path / name / "report.html").is_file()
    # the same target object, fine-tuned in place between the audits: no answer of the base may be reused
    verbatim = {n: next(f for f in res[n].findings if f.probe == "language.extraction").metric("verbatim_rate").value
                for n in ("base", "fine-tuned")}
    assert verbatim["fine-tuned"] > verbatim["base"]
    assert "<svg" in (tmp_path / "leakage.html").read_text()
    summary = (tmp_path / "summary.txt").read_text()
    assert "fine-tuned" in summary and "base" in summary
    assert "injection trials succeeded" in summary  # the injection probe ran on both models
    assert "fine-tuned: jailbreak: " in summary and "GCG emitted the target on" in summary
    report = json.loads((tmp_path / "fine-tuned" / "report.json").read_text())
    for c in make_corpus(0).data.canaries:
        assert c.secret not in json.dumps(report)
    # what fine-tuning changed, paired row by row: leakage got worse, documents compared one by one
    comp = res["comparison"]
    v = comp.delta("language.extraction", "verbatim_rate")
    assert v.test == "mcnemar exact" and v.n == 45 and v.candidate > v.baseline == 0.0  # 4 of 45: too few to flag
    worse = {(d.probe, d.metric) for d in comp.significant() if d.change == "worse"}
    assert {("language.extraction", "mean_similarity"), ("language.canary", "max_exposure")} <= worse
    sim, auc = comp.delta("language.extraction", "mean_similarity"), comp.delta("language.membership", "max_auc")
    assert sim.test == auc.test == "paired bootstrap" and sim.q <= 0.05
    assert "language.extraction: mean_similarity" in summary and (tmp_path / "compare" / "comparison.html").is_file()
    secrets = [c.secret for c in make_corpus(0).data.canaries]
    assert not any(sec in (tmp_path / "compare" / "comparison.html").read_text() for sec in secrets)


@pytest.mark.slow
def test_assay_demo_llm_end_to_end(tmp_path):
    from assay.cli import main

    assert main(["demo", "llm", "--out", str(tmp_path), "--quiet"]) == 0
    summary = (tmp_path / "summary.txt").read_text()
    assert "fine-tuned" in summary
    comp = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    worse = {(p["probe"], d["metric"]) for p in comp["pairs"] for d in p["deltas"] if d["change"] == "worse"}
    # fine-tuning on planted secrets: leakage is the flagged change
    assert ("language.extraction", "verbatim_rate") in worse and ("language.membership", "max_auc") in worse
