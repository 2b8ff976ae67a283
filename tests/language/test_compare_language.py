"""assay compare on two language models: a model trained on planted secrets, against its base (the
same initialisation, untrained), is flagged on leakage, row by row; a copy of it is flagged on nothing."""

import copy
import json

from conftest import SECRET

from assay.cli import EXIT_POLICY_FAILED, main
from assay.compare import compare
from assay.targets.causal_lm import CausalLMTarget

LEAKAGE = ["language.extraction", "language.canary", "language.membership", "language.pii"]
PARAMS = {"language.extraction": {"prefix_tokens": 4, "suffix_tokens": 8},
          "language.canary": {"samples": 64},
          "language.pii": {"samples": 4, "prefix_tokens": 4, "suffix_tokens": 8, "temperature": 0.0}}


def test_training_on_secrets_is_flagged_on_leakage_row_by_row(trained, untrained, data):
    c = compare(untrained, trained, data, probes=LEAKAGE, params=PARAMS, n_boot=500)
    worse = {(d.probe, d.metric) for d in c.significant() if d.change == "worse"}
    assert not any(d.change == "better" for d in c.significant())  # memorising made nothing safer
    # documents reproduced verbatim: paired document by document (McNemar), the base reproduced none
    v = c.delta("language.extraction", "verbatim_rate")
    assert v.test == "mcnemar exact" and v.n == 14 and v.baseline == 0.0 and v.candidate >= 0.5
    assert ("language.extraction", "verbatim_rate") in worse and v.q <= 0.05
    # membership: the AUC of each record's score, paired record by record (bootstrap over records)
    auc = c.delta("language.membership", "max_auc")
    assert auc.test == "paired bootstrap" and auc.n == 150 and auc.delta > 0.3 and auc.low > 0
    assert ("language.membership", "max_auc") in worse
    # personal data: outputs whose items occur in the training texts, paired output by output
    pii = c.delta("language.pii", "leaked_output_rate")
    assert pii.test == "mcnemar exact" and pii.candidate > pii.baseline == 0.0
    # canaries: two of them, too few rows for any paired test to reach significance; it says so (no
    # change of any size is detectable on two rows: no minimum detectable effect)
    ext = c.delta("language.canary", "extraction_rate")
    assert ext.test == "mcnemar exact" and ext.n == 2 and ext.change == "no detectable change" and ext.mde is None
    assert not c.gate["passed"]  # the default gate: no metric significantly worse


def test_a_copy_of_a_language_model_shows_no_change(trained, memorized, tok, data):
    twin = CausalLMTarget(copy.deepcopy(memorized), tok, device="cpu")
    probes = ["language.extraction", "language.membership"]
    c = compare(trained, twin, data, probes=probes, params={k: PARAMS[k] for k in probes if k in PARAMS}, n_boot=300)
    tested = [d for d in c.deltas if d.p is not None]
    assert tested and c.significant() == [] and c.gate["passed"]
    # every rate and AUC was paired (not judged from the two intervals)
    assert {d.test for d in tested} <= {"mcnemar exact", "paired bootstrap"}
    assert c.delta("language.extraction", "verbatim_rate").lost == c.delta("language.extraction", "verbatim_rate").gained == 0


def test_cli_compares_two_model_directories(tmp_path, memorized, tok, data):
    """Two causal-LM directories on disk, the text data as JSON Lines: the candidate leaks, the gate
    fails with the policy exit code, and the report names the leak without repeating the secret."""
    from tiny import tiny_model

    base_dir, tuned_dir = tmp_path / "base", tmp_path / "tuned"
    tiny_model(seed=0).save_pretrained(base_dir)
    memorized.save_pretrained(tuned_dir)
    for d in (base_dir, tuned_dir):
        tok.save_pretrained(d)
    texts = tmp_path / "texts.jsonl"
    data.write_jsonl(texts)
    out = tmp_path / "cmp"
    code = main(["compare", str(base_dir), str(tuned_dir), "--data", str(texts), "--probe", "language.extraction",
                 "--param", "language.extraction.prefix_tokens=4", "--param", "language.extraction.suffix_tokens=8",
                 "--out", str(out), "--names", "base,tuned", "--quiet"])
    assert code == EXIT_POLICY_FAILED
    report = json.loads((out / "comparison.json").read_text())
    rows = [d for p in report["pairs"] for d in p["deltas"] if d["metric"] == "verbatim_rate"]
    assert rows and rows[0]["change"] == "worse" and rows[0]["test"] == "mcnemar exact"
    for f in ("comparison.html", "junit.xml", "base/report.json", "tuned/report.json"):
        assert (out / f).exists()
    assert SECRET not in (out / "comparison.html").read_text()


def test_language_models_get_the_language_suite_by_default(trained):
    from assay.cli import _default_suite

    assert _default_suite(None, trained) == "language"
    assert _default_suite(None, "model.gguf") == "language" and _default_suite(None, "model.onnx") == "standard"
    assert _default_suite("quick", trained) == "quick"
