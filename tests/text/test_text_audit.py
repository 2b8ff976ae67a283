"""Auditing Hugging Face text classifiers end to end: CLI and API, fairness, slices, membership."""

import json

import numpy as np
import pytest
from conftest import NEG_B, POS_B, build_text_model, sentences, write_table

import assay
from assay.cli import main
from assay.data.dataset import Dataset

OK = {"pass", "warn", "fail", "skipped"}


def _check_report(out, probes_ran):
    rep = json.loads((out / "report.json").read_text())
    by = {f["probe"]: f for f in rep["findings"]}
    for f in rep["findings"]:
        assert f["verdict"] in OK, (f["probe"], f["summary"], f.get("error"))
        if f["verdict"] == "skipped":
            assert f["summary"].startswith("Skipped: ") and "\n" not in f["summary"]
    for name in probes_ran:
        assert by[name]["verdict"] != "skipped", (name, by[name]["summary"])
    assert rep["data"]["kind"] == "text" and rep["target"]["input"] == "text"
    return by


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_cli_standard_suite_on_a_text_model_never_errors(sentiment_model, tmp_path, fmt):
    texts, labels = sentences(240, 21)
    rng = np.random.default_rng(0)
    data = write_table(tmp_path / f"reviews.{fmt}", texts, ["positive" if v else "negative" for v in labels],
                       dialect=rng.choice(["a", "b"], 240), seen=rng.integers(0, 2, 240))
    (tmp_path / "ood.txt").write_text("\n".join(f"the weather on day {i} was cloudy with rain" for i in range(60)))
    out = tmp_path / "out"
    argv = ["audit", str(sentiment_model), "--data", str(data), "--text-column", "review", "--sensitive", "dialect",
            "--member", "seen", "--out", str(out), "--device", "cpu", "--quiet",
            "--param", "robustness.text.max_samples=40"]
    if fmt == "jsonl":
        argv += ["--ood", str(tmp_path / "ood.txt"), "--query-budget", "4000"]
    code = main(argv)
    assert code in (0, 1)  # a policy failure is fine (an undefended model), an error is not
    by = _check_report(out, ["robustness.text", "reliability.calibration", "reliability.selective",
                             "reliability.ood", "fairness.groups", "fairness.slices", "privacy.membership"])
    for name in ("robustness.evasion", "robustness.corruption", "integrity.backdoor", "certify.smoothing",
                 "privacy.inversion", "privacy.extraction", "explain.attributions"):
        assert by[name]["verdict"] == "skipped" and "not text" in by[name]["summary"]
    m = {x["name"]: x for x in by["robustness.text"]["metrics"]}
    assert m["robust_accuracy[char]"]["value"] < 0.6 and m["robust_accuracy[char]"]["low"] is not None
    ood = by["reliability.ood"]
    assert ood["accounting"]["ood_source"] == ("dataset x_ood" if fmt == "jsonl" else "built-in text shift 'permute' of the test texts")
    mem = by["privacy.membership"]
    assert set(mem["accounting"]["attacks_not_run"]) == {"lira", "rmia"} and "recipe" in mem["accounting"]["attacks_not_run"]["lira"]
    if fmt == "jsonl":
        rep = json.loads((out / "report.json").read_text())
        assert rep["accounting"]["queries"] <= 4000


@pytest.fixture(scope="module")
def dialect_data():
    """Reviews in two dialects; the sentiment words of dialect b are ones a standard model never saw."""
    a_texts, a_labels = sentences(200, 31)
    b_texts, b_labels = sentences(200, 32, pos=POS_B, neg=NEG_B)
    return Dataset(a_texts + b_texts, a_labels + b_labels, groups={"dialect": np.array(["a"] * 200 + ["b"] * 200)})


def test_group_bias_is_flagged_and_a_fair_twin_passes(sentiment_model, dialect_data, tmp_path):
    fair_texts, fair_labels = sentences(300, 41)
    b_texts, b_labels = sentences(300, 42, pos=POS_B, neg=NEG_B)
    fair = build_text_model(tmp_path / "fair", fair_texts + b_texts, fair_labels + b_labels, epochs=5)
    verdicts = {}
    for name, model in (("biased", sentiment_model), ("fair", fair)):
        rep = assay.audit(str(model), dialect_data, probes=["fairness.groups"], device="cpu",
                          params={"fairness.groups": {"n_boot": 300}})
        f = rep.findings[0]
        verdicts[name] = (f.verdict, f.metric("accuracy_parity_difference[dialect]").value)
    assert verdicts["biased"][0] == "fail" and verdicts["biased"][1] > 0.2
    assert verdicts["fair"][0] == "pass" and verdicts["fair"][1] < 0.05


def test_slices_find_long_texts_a_truncating_model_gets_wrong_and_never_slice_on_the_label(sentiment_model):
    from assay.targets import HuggingFaceTarget

    short, ys = sentences(150, 51, length=(5, 8))
    long_, yl = sentences(150, 52, length=(24, 30), sentiment_at="end")
    target = HuggingFaceTarget.from_pretrained(sentiment_model, device="cpu", max_length=12)  # cuts long reviews
    rep = assay.audit(target, (short + long_, ys + yl), probes=["fairness.slices"])
    f = rep.findings[0]
    assert "label" not in f.accounting["features"] and "words" in f.accounting["features"]
    # compared at the same confidence, the cut reviews (where the model is unsure) still stand out
    assert f.verdict in ("warn", "fail") and f.metric("significant_slices").value >= 1, [(m.name, m.value, m.low, m.high) for m in f.metrics]
    significant = [r for r in f.evidence[0].data["rows"] if r[6] < 0.05]
    assert any(str(r[0]).startswith("words ") for r in significant), significant
    # the same model reading whole texts has no such slice
    whole = HuggingFaceTarget.from_pretrained(sentiment_model, device="cpu")
    assert assay.audit(whole, (short + long_, ys + yl), probes=["fairness.slices"]).findings[0].verdict == "pass"


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """A text model that memorised its 150 training reviews, 30% of them mislabelled."""
    texts, labels = sentences(300, 5, titles=True)
    rng = np.random.default_rng(1)
    noisy = [1 - v if rng.random() < 0.3 else v for v in labels]
    d = build_text_model(tmp_path_factory.mktemp("overfit"), texts[:150], noisy[:150], epochs=30, batch_size=32)
    member = np.r_[np.ones(150, bool), np.zeros(150, bool)]
    return d, Dataset(texts, noisy, member=member)


def test_membership_on_an_overfit_text_model_is_flagged_without_reference_models(overfit):
    model, data = overfit
    rep = assay.audit(str(model), data, probes=["privacy.membership"], device="cpu")
    f = rep.findings[0]
    assert f.verdict == "fail" and f.metric("max_tpr_at_fpr[fpr=0.01]").value > 0.1
    assert set(f.accounting["attacks_not_run"]) == {"lira", "rmia"}
    note = next(e for e in f.evidence if e.title == "Attacks not run")
    assert "lira was not run: assay cannot retrain" in note.data["text"] and "recipe=" in note.data["text"]
    # label-only perturbs numbers: asked for on text, it is reported as not run, never an error
    rep = assay.audit(str(model), data, probes=["privacy.membership"], device="cpu",
                      params={"privacy.membership": {"attacks": ["baseline", "label_only"]}})
    assert rep.findings[0].verdict == "fail" and "label_only" in rep.findings[0].accounting["attacks_not_run"]


def test_membership_runs_reference_attacks_on_text_with_a_recipe(overfit, tmp_path):
    model, data = overfit
    rep = assay.audit(str(model), data, probes=["privacy.membership"], device="cpu", out=tmp_path,
                      params={"privacy.membership": {"recipe": "text_recipes:tfidf_logreg", "n_reference": 2,
                                                     "attacks": ["baseline", "rmia"]}})
    f = rep.findings[0]
    assert f.error is None and f.accounting["attacks_not_run"] == {} and f.accounting["reference_models"] == 2
    assert np.isfinite(f.metric("auc[rmia]").value) and f.verdict == "fail"


def test_api_reads_text_files_with_data_options(sentiment_model, tmp_path):
    texts, labels = sentences(60, 61)
    path = write_table(tmp_path / "r.jsonl", texts, ["positive" if v else "negative" for v in labels])
    rep = assay.audit(str(sentiment_model), str(path), probes=["reliability.calibration"], device="cpu",
                      data_options={"text": "review", "label": "label"})
    assert rep.findings[0].verdict in ("pass", "warn") and rep.findings[0].metric("ece").value < 0.2
    with pytest.raises(assay.errors.InputError, match="data_options"):
        assay.audit(str(sentiment_model), Dataset(texts, labels), data_options={"text": "review"})
    # a numeric table given to a text model: one line that names the flag
    write_table(tmp_path / "n.csv", [1.0] * 4, [0, 1, 0, 1])
    assert main(["audit", str(sentiment_model), "--data", str(tmp_path / "n.csv"), "--quiet",
                 "--out", str(tmp_path / "o")]) == 2
