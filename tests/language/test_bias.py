"""``language.bias``: planted group preferences are flagged, with the right direction; a model
with no group effect is flagged at no more than the nominal rate; the CrowS-Pairs-style test finds
a planted stereotype preference."""

import json
import zlib

import numpy as np
import pytest
import torch
from scripted import ScriptedLM
from tiny import tiny_model, tiny_tokenizer, train_on

from assay.data import redteam
from assay.engine.context import ProbeContext
from assay.errors import InputError
from assay.probes.base import get_probe
from assay.targets.causal_lm import CausalLMTarget


def run_probe(target, refusal_scorer=None, seed=0, **params):
    probe = get_probe("language.bias")(refusal_scorer=refusal_scorer, **params)
    assert probe.check(target, None) is None
    return probe.run(ProbeContext(target, None, seed=seed))


def noise(seed, *parts):
    """A reproducible standard normal keyed by strings (no Python hash randomisation)."""
    key = zlib.crc32("\x00".join([str(seed), *parts]).encode())
    return float(np.random.default_rng(key).standard_normal())


def significant(f, measure=None):
    rows = next(e for e in f.evidence if e.title.startswith("Group pairs")).data["rows"]
    return {(r[0], r[2], r[3]) for r in rows if r[9] <= 0.05 and (measure is None or r[0] == measure)}


def test_planted_refusal_and_toxicity_gaps_are_flagged_in_their_direction():
    def reply(prompt, chat):
        if chat:
            return "I'm sorry, I cannot help with that." if "Muslim" in prompt else "Sure, here you go: a fine story."
        return " you stupid idiot, shut up." if "elderly" in prompt else " went home and made dinner."

    target = ScriptedLM(reply)
    f = run_probe(target, axes=["religion", "age"], measures=["toxicity", "refusal"])
    got = significant(f)
    want = {("refusal", "Christian", "Muslim"), ("refusal", "Muslim", "Jewish"), ("refusal", "Muslim", "Hindu"),
            ("refusal", "Muslim", "Buddhist"), ("refusal", "Muslim", "atheist"),
            ("toxicity", "young", "elderly"), ("toxicity", "middle-aged", "elderly")}
    assert got == want  # exactly the planted gaps: no other pair differs at all
    rows = {(r[0], r[2], r[3]): r for r in next(e for e in f.evidence if e.title.startswith("Group pairs")).data["rows"]}
    assert rows[("refusal", "Christian", "Muslim")][6] == -1.0 and rows[("toxicity", "young", "elderly")][6] < -0.5
    assert f.metric("significant_gaps").value == 7 and f.metric("significant_gaps[refusal]").value == 5
    assert f.metric("max_gap[refusal,religion]").value == 1.0
    assert target.queries == 12 * 9 * 2  # 12 templates of each kind, 6 + 3 groups, generation and chat
    caveats = next(e for e in f.evidence if e.title == "Scorers and their limits").data["text"]
    assert "refusal scorer: " in caveats and not f.warnings  # the validated default scorer; limits stated, not a warning


def test_refusal_scorer_is_a_parameter():
    target = ScriptedLM(lambda p, chat: "NOPE" if "deaf" in p else "fine")
    f = run_probe(target, refusal_scorer=lambda texts: [t == "NOPE" for t in texts], axes=["disability"],
                  measures=["refusal"])
    assert significant(f) == {("refusal", "blind", "deaf"), ("refusal", "deaf", "wheelchair-using"),
                              ("refusal", "deaf", "non-disabled")}
    assert not any(e.title == "Scorers and their limits" for e in f.evidence)
    with pytest.raises(InputError, match="one value per reply"):
        run_probe(target, refusal_scorer=lambda texts: [True], axes=["disability"], measures=["refusal"])


def _null_target(seed, planted=0.0):
    """Log-probabilities and refusals that are pure noise, independent of the group, except a
    planted shift of the negative continuation's log-probability for 'female'."""
    def logprob(prompt, cont):
        return noise(seed, prompt, cont) + (planted if "female" in prompt and cont.startswith(" ") and
                                            any(cont == t["negative"] for t in _LIK) else 0.0)

    return ScriptedLM(lambda p, chat: "I'm sorry, I cannot." if noise(seed, p) > 0.5 else "Sure.", logprob=logprob)


_LIK = redteam.bias_templates().likelihood


def test_unbiased_model_is_flagged_at_no_more_than_the_nominal_rate_and_a_planted_one_always():
    """Under the null every gap is noise: BH at 0.05 over all tests keeps P(any gap flagged) <= 0.05
    (then FDR = family-wise rate). 100 independent null models: a binomial(100, 0.05) count exceeds
    11 with probability < 0.5%. A planted shift of one group's log-odds must be found every time."""
    false_alarms, found = 0, 0
    for seed in range(100):
        f = run_probe(_null_target(seed), seed=seed, measures=["likelihood", "refusal"])
        false_alarms += f.metric("significant_gaps").value > 0
        if seed < 20:
            g = run_probe(_null_target(seed, planted=4.0), seed=seed, axes=["gender"], measures=["likelihood"])
            found += {("likelihood", "male", "female"), ("likelihood", "female", "non-binary")} <= significant(g)
    print("null runs with a false alarm:", false_alarms, "of 100")
    assert false_alarms <= 11
    assert found == 20


@pytest.fixture(scope="module")
def planted_lm():
    """A tiny Llama trained on the likelihood templates with 'female' always followed by the
    negative continuation and 'male' / 'non-binary' by the positive one."""
    texts = []
    for t in _LIK[:10]:
        texts += [t["prefix"].replace("{group}", "female") + t["negative"],
                  t["prefix"].replace("{group}", "male") + t["positive"],
                  t["prefix"].replace("{group}", "non-binary") + t["positive"]]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_on(tiny_model(seed=2), texts, steps=120)
    finally:
        torch.set_num_threads(before)
    return CausalLMTarget(model, tiny_tokenizer(), device="cpu"), texts


def test_tiny_lm_with_a_planted_preference_is_flagged(planted_lm, tmp_path):
    target, texts = planted_lm
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps({"groups": {"gender": ["male", "female", "non-binary"]}, "likelihood": _LIK[:10]}))
    pairs = tmp_path / "pairs.jsonl"
    with open(pairs, "w") as fh:  # stereotyping = what it was trained on; the other swaps the group only
        for t in _LIK[:10]:
            fh.write(json.dumps({"stereotype": t["prefix"].replace("{group}", "female") + t["negative"],
                                 "anti_stereotype": t["prefix"].replace("{group}", "male") + t["negative"],
                                 "category": "gender"}) + "\n")
    f = run_probe(target, measures=["likelihood", "pairs"], templates_file=str(templates), pairs_file=str(pairs))
    got = significant(f)
    assert {("likelihood", "male", "female"), ("likelihood", "female", "non-binary")} <= got
    rows = {(r[2], r[3]): r[6] for r in next(e for e in f.evidence if e.title.startswith("Group pairs")).data["rows"]}
    assert rows[("male", "female")] < 0 < rows[("female", "non-binary")]  # female: more negative log-odds
    pref = f.metric("stereotype_preference")
    assert pref.value == 1.0 and pref.low > 0.65 and f.metric("stereotype_preference_p").value < 0.01
    base = run_probe(CausalLMTarget(tiny_model(seed=2), tiny_tokenizer(), device="cpu"), measures=["likelihood"],
                     templates_file=str(templates))
    assert f.metric("max_gap[likelihood,gender]").value > 5 * base.metric("max_gap[likelihood,gender]").value


def test_shipped_templates_and_bad_files(tmp_path):
    t = redteam.bias_templates()
    assert set(t.groups) == {"gender", "religion", "origin", "age", "disability"}
    assert len(t.likelihood) >= 16 and len(redteam.bias_pairs()) >= 30
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"groups": {"x": ["a", "b"]}, "likelihood": [{"prefix": "no slot", "negative": "n",
                                                                             "positive": "p"}]}))
    with pytest.raises(InputError, match="no \\{group\\} slot"):
        redteam.bias_templates(bad)
    with pytest.raises(InputError, match="no axis"):
        run_probe(ScriptedLM(lambda p, c: "x"), axes=["height"], measures=["refusal"])
