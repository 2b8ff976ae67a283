"""The language probes on a tiny model that memorised its corpus, against the same architecture
untrained: leakage is found where it was planted, and not where it was not."""

import json
import math

import numpy as np
import pytest
from conftest import SECRET

import assay
from assay.attacks import language as lm
from assay.cli import main
from assay.data.language import Canary
from assay.engine.plan import load_suite
from assay.engine.runner import Runner
from assay.probes.base import get_probe


def run_probe(name, target, data, **params):
    from assay.engine.context import ProbeContext

    probe = get_probe(name)(**params)
    assert probe.check(target, data) is None
    return probe.run(ProbeContext(target, data, seed=0))


def test_extraction_finds_memorised_documents_only_in_the_trained_model(trained, untrained, data):
    f = run_probe("language.extraction", trained, data, prefix_tokens=4, suffix_tokens=8, show=14)
    base = run_probe("language.extraction", untrained, data, prefix_tokens=4, suffix_tokens=8)
    v, b = f.metric("verbatim_rate"), base.metric("verbatim_rate")
    # most documents come back verbatim (the lines repeated 8 times among them); none from the untrained model
    assert v.value >= 0.5 and v.low <= v.value <= v.high and b.value == 0.0
    assert f.metric("mean_similarity").value > base.metric("mean_similarity").value + 0.2
    hl = next(e for e in f.evidence if e.kind == "highlight")
    labels = [r["label"] for r in hl.data["rows"]]
    assert "document 12: similarity 1.00 (verbatim)" in labels and "document 13: similarity 1.00 (verbatim)" in labels
    assert all(any(s["mark"] for s in r["segments"]) for r in hl.data["rows"][:2])


def test_untargeted_extraction_ranks_samples(trained, data):
    f = run_probe("language.extraction", trained, data, prefix_tokens=4, suffix_tokens=8, free_samples=12,
                  free_tokens=24, top_n=5, min_memorized_chars=20)
    names = {m.name for m in f.metrics}
    assert {"extraction_precision[perplexity]", "extraction_precision[zlib]", "extraction_precision[lowercase]",
            "memorized_sample_rate"} <= names
    # a model that memorised 46 short lines reproduces long runs of them when it samples freely
    assert f.metric("memorized_sample_rate").value > 0


def test_canary_exposure_is_high_when_planted_and_greedy_extraction_recovers_it(trained, untrained, data):
    f = run_probe("language.canary", trained, data, samples=300)
    base = run_probe("language.canary", untrained, data, samples=300)
    big, small = f.metric("exposure[admin]"), f.metric("exposure[small space]")
    assert small.value == small.low == small.high  # 10^4 candidates: enumerated, exact rank
    assert small.value == pytest.approx(math.log2(1e4))  # the secret ranks first among them
    assert big.value > 10 and big.low <= big.value <= big.high <= math.log2(1e6) + 1e-9
    assert base.metric("exposure[admin]").value < 8 and base.metric("exposure[small space]").value < 8
    assert f.metric("extraction_rate").value == 1.0 and base.metric("extraction_rate").value == 0.0
    table = next(e for e in f.evidence if e.kind == "table")
    assert SECRET not in json.dumps(table.data)  # the report never repeats the secret


def test_sampled_rank_agrees_with_the_exact_rank(untrained):
    c = Canary("the code is ", "417", "[0-9]{3}")
    exact = lm.canary_exposure(untrained, c, max_enumerate=10_000)
    sampled = lm.canary_exposure(untrained, c, max_enumerate=0, samples=400, seed=1)
    assert exact.method == "exact" and sampled.method.startswith("sampled")
    assert sampled.low - 0.3 <= exact.exposure <= sampled.high + 0.3


def test_membership_attacks_separate_members(trained, untrained, data):
    f = run_probe("language.membership", trained, data)
    names = {m.name for m in f.metrics}
    for a in ("loss", "zlib", "min_k", "min_k_plus"):
        assert f"auc[{a}]" in names and f"tpr_at_fpr[{a},fpr=0.01]" in names
    assert f.metric("max_auc").value > 0.95
    assert f.metric("tpr_at_fpr[loss,fpr=0.01]").value > 0.5
    assert math.isnan(f.metric("tpr_at_fpr[loss,fpr=0.001]").value)  # 120 non-members cannot measure 0.1%
    base = run_probe("language.membership", untrained, data)
    assert base.metric("max_auc").value < 0.8
    # the untrained model as the reference: the ratio removes what both models find easy
    scores = lm.membership_scores(trained, data.members[:10] + data.non_members[:10], attacks=["reference"],
                                  reference=untrained)
    assert scores["reference"][:10].mean() > scores["reference"][10:].mean()


def test_min_k_scores_match_their_definitions():
    from assay.targets.llm import TokenLogprobs

    lp = TokenLogprobs(np.array([-1.0, -5.0, -0.5, -3.0, -2.0]), mean=np.array([-2.0] * 5), std=np.array([1.0] * 5))
    assert lm.min_k_score(lp, 0.4) == pytest.approx((-5.0 - 3.0) / 2)
    assert lm.min_k_plus_score(lp, 0.2) == pytest.approx(-3.0)  # (-5 - -2) / 1
    assert lm.zlib_bytes("aaaa" * 100) < lm.zlib_bytes("".join(chr(97 + (i * 7) % 26) for i in range(400)))


def test_pii_probe_finds_the_memorised_email_and_masks_it(trained, untrained, data):
    f = run_probe("language.pii", trained, data, samples=4, prefix_tokens=4, suffix_tokens=12, temperature=0.0)
    assert f.metric("leaked_items").value >= 1 and f.metric("pii_output_rate[email]").value > 0
    dumped = json.dumps(f.to_dict())
    assert "alice@example.com" not in dumped and "a****@e******.com" in dumped
    base = run_probe("language.pii", untrained, data, samples=4, prefix_tokens=4, suffix_tokens=12)
    assert base.metric("leaked_items").value == 0


def test_language_audit_end_to_end_resumes_and_renders(trained, data, tmp_path):
    plan = load_suite("language")
    small = {"language.extraction": dict(prefix_tokens=4, suffix_tokens=8),
             "language.pii": dict(prefix_tokens=4, suffix_tokens=8, samples=4),
             "language.canary": dict(samples=200),
             "language.injection": dict(max_prompts=6, max_systems=1, max_new_tokens=8, adaptive_rounds=1,
                                        adaptive_seeds=2, attacker_tokens=8),
             "language.jailbreak": dict(max_requests=2, template_names=["direct"], max_new_tokens=4, gcg_requests=1,
                                        gcg_steps=2, gcg_search_width=8, gcg_topk=8),
             "language.toxicity": dict(max_prompts=2, max_new_tokens=4),
             "language.bias": dict(axes=["gender"], max_templates=2, max_new_tokens=4)}
    for pp in plan.probes:
        pp.params.update(small.get(pp.name, {}))
    report = Runner(trained, data, plan, out_dir=tmp_path).run()
    verdicts = {f.probe: f.verdict for f in report.findings}
    assert verdicts["language.canary"] == "fail" and verdicts["language.membership"] == "fail"
    assert all(f.error is None for f in report.findings)
    again = Runner(trained, data, plan, out_dir=tmp_path).run()
    assert again.accounting["resumed_findings"] == len(plan.probes) == 8
    from assay.report import render_all

    paths = render_all(report, tmp_path)
    html = paths["html"].read_text()
    assert "<mark>" in html and SECRET not in html


def test_classic_probes_skip_language_targets_and_language_probes_skip_tensors(trained, data, demo_target):
    assert "language-model target" in get_probe("language.canary")().check(demo_target, None)
    assert get_probe("robustness.evasion")().check(trained, data) is not None
    assert "text data" in get_probe("language.extraction")().check(trained, object())


def test_cli_audits_a_model_directory_with_text_data(memorized, tok, data, tmp_path, capsys):
    memorized.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    jsonl = data.write_jsonl(tmp_path / "texts.jsonl")
    out = tmp_path / "out"
    code = main(["audit", str(tmp_path / "lm"), "--data", str(jsonl), "--probe", "language.canary",
                 "--param", "language.canary.samples=100", "--out", str(out), "--quiet", "--token-budget", "10000000",
                 "--llm", "max_batch_size=8"])
    assert code == 1  # the planted canary fails the default policy
    rep = json.loads((out / "report.json").read_text())
    assert rep["target"]["kind"] == "causal-lm" and rep["target"]["token_budget"] == 10_000_000
    assert rep["data"]["canaries"] == 2
    assert main(["audit", str(tmp_path / "lm"), "--data", str(jsonl), "--probe", "language.canary",
                 "--llm", "nope=1", "--out", str(out)]) == 2
    assert "--llm 'nope=1' must be KEY=VALUE" in capsys.readouterr().err
    r = assay.audit(str(tmp_path / "lm"), str(jsonl), probes=["language.membership"], device="cpu")
    assert r.findings[0].verdict == "fail"
