"""The greedy character / word attack on text classifiers and the robustness.text probe."""

import numpy as np
import pytest
import torch
from conftest import sentences

from assay.attacks.text import STOPWORDS, char_edits, greedy_text_attack, levenshtein, word_bugs
from assay.data.dataset import Dataset
from assay.errors import InputError
from assay.targets.base import QueryBudget


class Counting:
    """scores_fn that records every batch and enforces a hard budget like a Target does."""

    def __init__(self, target, limit=None):
        self.target, self.budget, self.batches = target, QueryBudget(limit), []

    def __call__(self, texts):
        self.budget.charge(len(texts))
        self.batches.append(list(texts))
        return self.target.scores(texts)


@pytest.fixture(scope="module")
def victims(sentiment_target):
    texts, labels = sentences(60, 11)
    y = torch.tensor(labels)
    assert (sentiment_target.scores(texts).argmax(1) == y).float().mean() >= 0.95  # an accurate model
    return texts, y


def test_char_attack_breaks_the_model_within_its_per_sample_allowance(sentiment_target, victims):
    texts, y = victims
    fn = Counting(sentiment_target)
    res = greedy_text_attack(fn, texts, y, edits="char", max_queries=60, max_words=2, seed=0)
    assert res.success_rate >= 0.6  # an undefended model breaks
    assert int(res.queries.max()) <= 60 and int(res.queries.sum()) == sum(map(len, fn.batches))
    # every success is real: the adversarial text, scored afresh, has another label
    won = res.success & ~res.clean_wrong
    adv = [res.texts_adv[i] for i in won.nonzero().flatten().tolist()]
    assert (sentiment_target.scores(adv).argmax(1) != y[won]).all()
    for i in won.nonzero().flatten().tolist():
        a, b = texts[i].split(), res.texts_adv[i].split()
        changed = [(u, v) for u, v in zip(a, b) if u != v]
        assert len(a) == len(b) and 1 <= len(changed) <= 2  # at most max_words=2 words changed
        assert all(u.lower() not in STOPWORDS for u, _ in changed)  # stopwords are never edited
        assert sum(levenshtein(u, v) for u, v in changed) == int(res.edit_distance[i]) <= 30
    # untouched texts come back as they were
    assert all(res.texts_adv[i] == texts[i] for i in (~res.success).nonzero().flatten().tolist()
               if int(res.words_changed[i]) == 0)


def test_hard_budget_is_never_exceeded_and_is_reported(sentiment_target, victims):
    texts, y = victims
    for limit in (0, 7, 45, 130):
        fn = Counting(sentiment_target)
        res = greedy_text_attack(fn, texts, y, edits="char", max_queries=60, query_budget=limit, seed=0,
                                 clean_scores=sentiment_target.scores(texts))
        assert sum(map(len, fn.batches)) == int(res.queries.sum()) <= limit
        assert res.info["budget_exhausted"]  # 60 texts need more than 130 queries
    # the target's own budget: the attack stops cleanly and keeps what it found
    fn = Counting(sentiment_target, limit=100)
    res = greedy_text_attack(fn, texts, y, edits="char", max_queries=60, seed=0)
    assert fn.budget.used <= 100 and res.info["budget_exhausted"] and int(res.queries.sum()) == fn.budget.used


def test_word_bugs_keep_words_readable_and_attack_flips_labels(sentiment_target, victims):
    texts, y = victims
    rng = np.random.default_rng(0)
    bugs = word_bugs("terrible", 4, rng, {"terrible": ["dire"]})
    assert bugs[0] == "dire" and len(bugs) == 4
    assert all(b == "dire" or b.replace(" ", "") == "terrible" or levenshtein(b, "terrible") == 1 for b in bugs)
    assert set(char_edits("good", 4, rng)) <= {w for w in _all_char_edits("good")}
    res = greedy_text_attack(sentiment_target.scores, texts, y, edits="word", max_queries=60, max_words=1, seed=1)
    assert res.success_rate >= 0.3
    won = (res.success & ~res.clean_wrong).nonzero().flatten().tolist()
    assert (sentiment_target.scores([res.texts_adv[i] for i in won]).argmax(1) != y[won]).all()


def _all_char_edits(w):
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = {w[:i] + w[i + 1] + w[i] + w[i + 2:] for i in range(len(w) - 1)}
    out |= {w[:i] + c + w[i + 1:] for i in range(len(w)) for c in letters}
    out |= {w[:i] + w[i + 1:] for i in range(len(w))}
    out |= {w[:i] + c + w[i:] for i in range(len(w) + 1) for c in letters}
    return out


def test_attack_is_seeded_and_checks_its_arguments(sentiment_target, victims):
    texts, y = victims
    a = greedy_text_attack(sentiment_target.scores, texts[:20], y[:20], max_queries=40, seed=3)
    b = greedy_text_attack(sentiment_target.scores, texts[:20], y[:20], max_queries=40, seed=3)
    assert a.texts_adv == b.texts_adv and torch.equal(a.queries, b.queries)
    with pytest.raises(InputError, match="edits="):
        greedy_text_attack(sentiment_target.scores, texts, y, edits="pixel")
    with pytest.raises(InputError, match="one label per text"):
        greedy_text_attack(sentiment_target.scores, texts, y[:3])


def test_robustness_text_probe_reports_rates_with_intervals_and_examples(sentiment_target):
    import assay

    texts, labels = sentences(40, 12)
    rep = assay.audit(sentiment_target, Dataset(texts, labels), probes=["robustness.text"],
                      params={"robustness.text": {"queries_per_sample": 60, "max_samples": 30}})
    f = rep.findings[0]
    assert f.verdict in ("fail", "warn") and f.error is None
    ra, asr = f.metric("robust_accuracy[char]"), f.metric("attack_success_rate[char]")
    assert ra.low <= ra.value <= ra.high and asr.method.lower().startswith("clopper")
    # robust accuracy = clean accuracy x (1 - success rate) on the sampled rows
    rows = f.accounting["sample_rows"]
    assert len(rows) == 30 and rows == sorted(set(rows))
    clean_acc = (sentiment_target.scores([texts[i] for i in rows]).argmax(1) == torch.tensor(labels)[rows]).float().mean()
    assert ra.value == pytest.approx(float(clean_acc) * (1 - asr.value))
    assert f.metric("robust_accuracy").value <= min(ra.value, f.metric("robust_accuracy[word]").value)
    assert 0 < f.metric("queries_per_sample[char]").value <= 60
    table = next(e for e in f.evidence if e.kind == "table")
    orig, pert = table.data["rows"][0][1], table.data["rows"][0][2]
    assert orig in texts and orig != pert
    assert f.metric("queries_used").value == f.accounting["queries_charged"]  # clean scores came from the cache
    # per-text outcomes that reproduce each robust accuracy (assay compare pairs two models text by text)
    from assay import outcomes as oc

    vec = oc.decode(f.outcomes)
    for name in ("robust_accuracy", "robust_accuracy[char]", "robust_accuracy[word]"):
        recipe = f.outcomes["metrics"][name]
        assert oc.evaluate(recipe, vec, np.ones((1, 30)))[0] == pytest.approx(f.metric(name).value)


def test_text_probe_skips_numeric_data_and_numeric_probes_skip_text(sentiment_target):
    from assay.probes.base import all_probes
    from assay.targets import TorchTarget

    probes = all_probes()
    numeric = Dataset(np.zeros((10, 3), np.float32), [0, 1] * 5)
    tensor_target = TorchTarget(torch.nn.Linear(3, 2), input_shape=(3,), num_classes=2, device="cpu")
    assert "numeric" in probes["robustness.text"]().check(tensor_target, numeric)
    text = Dataset(*sentences(10, 0))
    for name in ("robustness.evasion", "robustness.blackbox", "robustness.corruption", "integrity.backdoor",
                 "certify.smoothing", "privacy.inversion", "privacy.extraction", "explain.attributions",
                 "privacy.dp_audit", "privacy.unlearning"):
        why = probes[name]().check(sentiment_target, text)
        assert why and "not text" in why and "\n" not in why, name
    for name in ("robustness.text", "reliability.calibration", "reliability.selective", "reliability.ood",
                 "fairness.slices"):
        assert probes[name]().check(sentiment_target, text) is None, name
