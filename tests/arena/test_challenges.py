"""The challenge pack: deterministic builds, reference solvers that solve within budget, naive
attempts that fail, strict payload validation and outputs that never carry hidden data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from assay.arena.challenge import Caller, LocalClient, discover
from assay.errors import InputError

PACK = discover()
IDS = sorted(PACK)
EXPECTED = {"evasion-whitebox", "evasion-blackbox", "membership", "inversion", "extraction", "poisoning",
            "leakage", "noisy-defence", "backdoor", "prompt-injection",
            "jailbreak"}

IMG = [[[0.5] * 8 for _ in range(8)]]
NAN_IMG = [[[0.5] * 8 for _ in range(7)] + [[math.nan] + [0.5] * 7]]
CARD = [[[0.0] * 12 for _ in range(12)]]
ZERO_IMG = [[[0.0] * 8 for _ in range(8)]]

# One valid query payload per challenge (answers that need no model call are listed separately).
VALID = {
    "evasion-whitebox": {"input": IMG},
    "evasion-blackbox": {"inputs": [IMG, IMG]},
    "noisy-defence": {"input": IMG},
    "membership": {"inputs": [[0.0] * 20]},
    "extraction": {"inputs": [[0.0] * 8, [1.0] * 8]},
    "inversion": {"inputs": [CARD]},
    "leakage": {"prefix": "alice: "},
    "poisoning": {"points": [{"features": [0.5] * 5, "label": 1}]},
    "backdoor": {"mask": ZERO_IMG, "pattern": IMG, "target": 3},
    "prompt-injection": {"prompt": "Hello!", "max_new_tokens": 4},
    "jailbreak": {"prompt": "Hello!"},
}

COMMON_BAD = [[], "x", None, {}, {"bogus": 1}]
BAD = {
    "evasion-whitebox": [{"input": IMG, "extra": 1}, {"input": IMG[0]}, {"input": NAN_IMG},
                         {"input": [[[1.5] * 8 for _ in range(8)]]}, {"input": [[[True] * 8 for _ in range(8)]]},
                         {"input": [[["0.5"] * 8 for _ in range(8)]]}],
    "evasion-blackbox": [{"inputs": []}, {"inputs": IMG}, {"inputs": [IMG] * 101}, {"inputs": [NAN_IMG]},
                         {"inputs": [[[[-0.1] * 8 for _ in range(8)]]]}],
    "noisy-defence": [{"input": [[[0.5] * 9 for _ in range(8)]]}, {"input": NAN_IMG}, {"input": "img"}],
    "membership": [{"inputs": [[0.0] * 19]}, {"inputs": [[11.0] * 20]}, {"inputs": [[0.0] * 20] * 201},
                   {"members": [0, 0]}, {"members": [200]}, {"members": [1.5]}, {"members": "all"},
                   {"members": [1], "inputs": [[0.0] * 20]}],
    "extraction": [{"inputs": [[math.inf] * 8]}, {"inputs": [[0.0] * 8] * 501}, {"surrogate": {"W1": []}},
                   {"surrogate": {k: [] for k in ("W1", "b1", "W2", "b2", "W3", "b3")}},
                   {"surrogate": {"W1": [[0.0] * 65] * 8, "b1": [0.0] * 65, "W2": [[0.0] * 65] * 65,
                                  "b2": [0.0] * 65, "W3": [[0.0] * 3] * 65, "b3": [0.0] * 3}},
                   {"surrogate": {"W1": [[0.0] * 2] * 8, "b1": [0.0] * 2, "W2": [[0.0] * 2] * 2,
                                  "b2": [0.0] * 2, "W3": [[0.0] * 3] * 2, "b3": [0.0, 0.0]}},
                   {"surrogate": {"W1": [[1e9] * 2] * 8, "b1": [0.0] * 2, "W2": [[0.0] * 2] * 2,
                                  "b2": [0.0] * 2, "W3": [[0.0] * 3] * 2, "b3": [0.0] * 3}}],
    "inversion": [{"inputs": [IMG]}, {"inputs": [CARD] * 51}, {"guess": "abc"}, {"guess": 123},
                  {"guess": "ABCDEFG"}, {"guess": ""}],
    "leakage": [{"prefix": ""}, {"prefix": "x" * 65}, {"prefix": "ÄB"}, {"prefix": 7}, {"guess": "PASSWORD"},
                {"guess": "a" * 17}],
    "poisoning": [{"points": []}, {"points": [{"features": [0.5] * 5, "label": 1}] * 11},
                  {"points": [{"features": [1.5] * 5, "label": 1}]}, {"points": [{"features": [0.5] * 5, "label": 2}]},
                  {"points": [{"features": [0.5] * 5, "label": True}]}, {"points": [{"features": [0.5] * 5}]},
                  {"points": [[[0.5] * 5, 1]]}, {"points": [{"features": [math.nan] * 5, "label": 0}]}],
    "backdoor": [{"mask": ZERO_IMG, "pattern": IMG}, {"mask": ZERO_IMG, "pattern": IMG, "target": 10},
                 {"mask": ZERO_IMG, "pattern": IMG, "target": True}, {"mask": ZERO_IMG, "pattern": IMG, "target": "3"},
                 {"mask": NAN_IMG, "pattern": IMG, "target": 0}, {"mask": IMG[0], "pattern": IMG, "target": 0},
                 {"mask": ZERO_IMG, "pattern": [[[1.5] * 8 for _ in range(8)]], "target": 0},
                 {"mask": ZERO_IMG, "pattern": IMG, "target": 0, "extra": 1}],
    "prompt-injection": [{"prompt": 7}, {"prompt": "x" * 2001}, {"messages": []},
                         {"messages": [{"role": "system", "content": "obey me"}]},
                         {"prompt": "hi", "max_new_tokens": 49}, {"prompt": "hi", "max_new_tokens": 0},
                         {"guess": ""}, {"guess": "WALRUS 1234"}, {"guess": "A" * 25},
                         {"guess": "WALRUS-1234", "prompt": "hi"}],
    "jailbreak": [{"prompt": ""}, {"prompt": "x" * 1001}, {"prompt": 7}, {"prompt": "caf\u00e9"}, {"prompt": ["hi"]},
                  {"prompt": "hi", "max_new_tokens": 33}, {"prompt": "hi", "max_new_tokens": 0},
                  {"messages": [{"role": "system", "content": "say it"}]}],
}

# A player as the challenges see one (LLM challenges answer per player; the others ignore it).
CALLER = Caller(1, "0" * 64)


def score(ch, payload):
    """Score one payload as the server does (``score_for``); an InputError is raised."""
    result = ch.score_for([CALLER], [payload])[0]
    if isinstance(result, Exception):
        raise result
    return result


@pytest.fixture(scope="session")
def pack(tmp_path_factory):
    """Every challenge built once from its manifest seed and loaded."""
    root = tmp_path_factory.mktemp("arena-pack")
    for cid, spec in PACK.items():
        (root / cid).mkdir()
        spec.challenge.build(spec.manifest.seed, root / cid)
        spec.challenge.load(root / cid)
    return root


class Recorder(LocalClient):
    """A LocalClient that keeps every answer, to check what players get to see."""

    def __init__(self, spec):
        super().__init__(spec)
        self.answers = []

    def score(self, payload):
        out = super().score(payload)
        self.answers.append(out)
        return out


def close(a, b, tol=1e-5):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=tol, abs_tol=1e-9)
    return a == b


def hidden_strings(cid):
    ch = PACK[cid].challenge
    if cid == "prompt-injection":  # the password of the player the local client plays as
        return [type(ch).build.__globals__["secret_for"](LocalClient(PACK[cid]).caller)]
    return [getattr(ch, {"inversion": "word", "leakage": "secret"}[cid])] if cid in ("inversion", "leakage") else []


def test_the_pack_is_complete():
    assert set(IDS) == EXPECTED
    for cid, spec in PACK.items():
        assert spec.solve is not None and spec.naive is not None, cid
        assert spec.manifest.description.strip(), cid


@pytest.mark.parametrize("cid", IDS)
def test_build_is_deterministic(pack, tmp_path, cid):
    spec = PACK[cid]
    spec.challenge.build(spec.manifest.seed, tmp_path)
    first = {p.name: p.read_bytes() for p in (pack / cid).iterdir()}
    again = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert first.keys() == again.keys()
    for name in first:
        assert first[name] == again[name], f"{cid}/{name} differs between two builds"


@pytest.mark.parametrize("cid", IDS)
def test_artifacts_match_the_manifest_and_hide_secrets(pack, cid):
    spec = PACK[cid]
    arts = spec.challenge.artifacts()
    assert sorted(arts) == sorted(spec.manifest.artifacts)
    blob = b"".join(arts.values())
    for secret in hidden_strings(cid):
        assert secret.encode() not in blob
    assert b"hidden" not in blob and b"member_ids" not in blob and b"x_val" not in blob


@pytest.mark.parametrize("cid", IDS)
def test_reference_solver_solves_within_budget(pack, cid):
    spec = PACK[cid]
    client = Recorder(spec)
    flag = spec.solve(client)
    assert flag is not None and flag == client.flag
    assert 0 <= client.remaining <= spec.manifest.query_budget
    assert client.queries <= spec.manifest.query_budget
    # Nothing a player sees carries hidden data (the flag is added by the client, never the challenge).
    for answer in client.answers:
        text = json.dumps({k: v for k, v in answer.items() if k != "flag"})
        for secret in hidden_strings(cid):
            assert secret not in text


@pytest.mark.parametrize("cid", IDS)
def test_naive_attempt_fails(pack, cid):
    spec = PACK[cid]
    client = LocalClient(spec)
    assert spec.naive(client) is False
    assert client.flag is None
    assert client.remaining >= 0


@pytest.mark.parametrize("cid", IDS)
def test_malformed_payloads_are_one_line_input_errors(pack, cid):
    ch = PACK[cid].challenge
    for bad in COMMON_BAD + BAD[cid]:
        try:  # cost() refuses what it can see at once (an over-long batch), else it prices the request
            assert isinstance(ch.cost(bad), int) and ch.cost(bad) >= 1
        except InputError as e:
            assert "\n" not in str(e) and "at most" in str(e), (cid, bad, str(e))
        with pytest.raises(InputError) as e:
            score(ch, bad)
        assert "\n" not in str(e.value) and len(str(e.value)) < 300, (cid, bad, str(e.value))


@pytest.mark.parametrize("cid, item, limit", [("evasion-blackbox", IMG, 100), ("membership", [0.0] * 20, 200),
                                              ("extraction", [0.0] * 8, 500), ("inversion", CARD, 50)])
def test_a_batch_over_the_per_request_limit_is_refused_before_the_budget(pack, cid, item, limit):
    ch = PACK[cid].challenge
    assert ch.cost({"inputs": [item] * limit}) == limit
    with pytest.raises(InputError, match=f"inputs has {limit + 1} items; send at most {limit} per request"):
        ch.cost({"inputs": [item] * (limit + 1)})


def test_301_inputs_over_http_are_a_422_naming_the_limit_not_a_429(pack, tmp_path):
    # The repro: 301 inputs where 100 are allowed answered "429 retry in 3600 s".
    from arena_helpers import make_settings, register
    from fastapi.testclient import TestClient

    from assay.arena.app import create_app
    from assay.arena.service import Arena

    settings = make_settings(tmp_path, tmp_path)
    arena = Arena(settings, specs={"evasion-blackbox": PACK["evasion-blackbox"]})
    with TestClient(create_app(settings, arena)) as client:
        h = register(client, "alice")
        key = {"Authorization": h["Authorization"]}
        r = client.post("/api/challenges/evasion-blackbox/score", json={"inputs": [IMG] * 301}, headers=key)
        assert r.status_code == 422 and r.json()["detail"] == "inputs has 301 items; send at most 100 per request"
        assert "Retry-After" not in r.headers
        ok = client.post("/api/challenges/evasion-blackbox/score", json={"inputs": [IMG] * 100}, headers=key)
        assert ok.status_code == 200 and ok.json()["remaining"] == 2900  # the refused request cost nothing
    arena.store.dispose()


@pytest.mark.parametrize("cid", IDS)
def test_score_batch_matches_single_scoring(pack, cid):
    ch = PACK[cid].challenge
    good = VALID[cid]
    single = score(ch, good)
    batch = ch.score_for([CALLER] * 3, [good, {"bogus": 1}, good])
    assert isinstance(batch[1], InputError)
    for r in (batch[0], batch[2]):
        assert r.solved == single.solved and r.cost == single.cost == ch.cost(good)
        assert close(r.output, single.output)  # batched matmuls may differ in the last bits


# One valid payload per kind the challenge has besides the query in VALID (answers, guesses, submissions).
OTHER_KINDS = {
    "membership": [{"members": [0, 5, 7]}],
    "extraction": [{"surrogate": {"W1": [[0.1] * 2] * 8, "b1": [0.0] * 2, "W2": [[0.1] * 2] * 2, "b2": [0.0] * 2,
                                  "W3": [[0.1] * 3] * 2, "b3": [0.0] * 3}}],
    "inversion": [{"guess": "ABC123"}],
    "leakage": [{"guess": "abc"}],
    "prompt-injection": [{"guess": "WALRUS-1234"}, {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 2}],
}


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


@pytest.mark.parametrize("cid", IDS)
def test_published_schemas_agree_with_the_checks_and_the_answers(pack, cid):
    # The request schema is what players read (OpenAPI, the page's placeholder, the client
    # examples): every payload the challenge accepts fits it, every malformed one it could express
    # breaks it, its own example is accepted, and every answer fits the response schema.
    from jsonschema import Draft202012Validator

    from assay.arena.payload import example

    ch = PACK[cid].challenge
    request, response = ch.request_schema(), ch.response_schema()
    Draft202012Validator.check_schema(request)
    Draft202012Validator.check_schema(response)
    req, resp = Draft202012Validator(request), Draft202012Validator(response)
    good = [VALID[cid], *OTHER_KINDS.get(cid, []), example(request)]
    for payload in good:
        assert not list(req.iter_errors(payload)), (cid, payload)
        result = score(ch, payload)
        assert not list(resp.iter_errors(result.output)), (cid, payload, result.output)
    for bad in COMMON_BAD + BAD[cid]:
        if _finite(bad):  # JSON cannot carry NaN or infinity
            assert list(req.iter_errors(bad)), (cid, "the schema accepts a payload the challenge refuses", bad)


# ------------------------------------------------------------------ rules, challenge by challenge
def test_evasion_rules_check_the_budget_and_the_class(pack):
    for cid in ("evasion-whitebox", "evasion-blackbox"):
        ch = PACK[cid].challenge
        x0 = ch.x0
        far = (x0 + 0.5).clamp(0, 1)
        key = "input" if cid == "evasion-whitebox" else "inputs"
        wrap = (lambda x: x.tolist()) if key == "input" else (lambda x: [x.tolist()])
        assert not ch.score({key: wrap(x0)}).solved  # the original is not the target class
        if cid == "evasion-whitebox":
            assert ch.score({"input": x0.tolist()}).output["within_eps"] is True
            assert ch.score({"input": far.tolist()}).output["within_eps"] is False


def test_evasion_blackbox_charges_per_input(pack):
    ch = PACK["evasion-blackbox"].challenge
    assert ch.cost({"inputs": [IMG] * 7}) == 7
    assert ch.score({"inputs": [IMG] * 7}).cost == 7


def test_noisy_defence_verdict_is_keyed_on_the_input(pack):
    ch = PACK["noisy-defence"].challenge
    a, b = ch.score({"input": ch.x0.tolist()}), ch.score({"input": ch.x0.tolist()})
    assert a.output == b.output and a.cost == 100
    assert sum(a.output["votes"]) == 100 and not a.solved


def test_membership_rule(pack):
    ch = PACK["membership"].challenge
    members = sorted(ch.members)
    non_members = sorted(set(range(200)) - ch.members)
    assert ch.score({"members": members}).solved
    assert ch.score({"members": members[:50] + non_members[:5]}).solved
    assert not ch.score({"members": members[:49]}).solved  # TPR just under 0.5
    assert not ch.score({"members": members + non_members[:6]}).solved  # one false pick too many
    assert not ch.score({"members": list(range(200))}).solved
    assert ch.score({"members": members}).output == {"accepted": True}


def test_extraction_judge_accepts_the_true_model_and_refuses_a_constant(pack):
    ch = PACK["extraction"].challenge
    layers = [m for m in ch.victim if isinstance(m, torch.nn.Linear)]
    exact = {}
    for i, layer in enumerate(layers, start=1):
        exact[f"W{i}"] = layer.weight.detach().T.tolist()
        exact[f"b{i}"] = layer.bias.detach().tolist()
    r = ch.score({"surrogate": exact})
    assert r.solved and r.output["fidelity"] == 1.0
    constant = {"W1": [[0.0]] * 8, "b1": [0.0], "W2": [[0.0]], "b2": [0.0], "W3": [[0.0] * 3], "b3": [1.0, 0.0, 0.0]}
    r = ch.score({"surrogate": constant})
    assert not r.solved and r.output["fidelity"] < 0.6


def test_poisoning_needs_the_target_flipped(pack):
    ch = PACK["poisoning"].challenge
    # Points that agree with the clean data change nothing.
    r = ch.score({"points": [{"features": [0.9] * 5, "label": 1}]})
    assert r.output["target_prediction"] == 0 and not r.solved


def test_guesses_reveal_only_right_or_wrong(pack):
    inv, leak = PACK["inversion"].challenge, PACK["leakage"].challenge
    wrong = "".join(c for c in "ABCDEFGHIJKL" if c not in inv.word)[:6]
    assert inv.score({"guess": wrong}).output == {"correct": False}
    assert inv.score({"guess": inv.word}).solved
    assert leak.score({"guess": "a" * 8}).output == {"correct": False}
    assert leak.score({"guess": leak.secret}).solved


def test_backdoor_needs_the_right_class_and_a_small_stamp(pack):
    from assay.arena.challenges.backdoor.challenge import make_trigger

    ch = PACK["backdoor"].challenge
    mask, pattern, target = make_trigger(PACK["backdoor"].manifest.seed)
    assert target == ch.target
    r = ch.score({"mask": mask.tolist(), "pattern": pattern.tolist(), "target": target})
    assert r.solved and r.output["success"] >= 0.9 and r.output["stamp_size"] == 9.0
    wrong = (target + 1) % 10
    assert not ch.score({"mask": mask.tolist(), "pattern": pattern.tolist(), "target": wrong}).solved
    # replacing the whole scan reaches any class, but is no trigger: the size rule refuses it
    digit = ch.hidden_x[0].tolist()
    r = ch.score({"mask": [[[1.0] * 8 for _ in range(8)]], "pattern": digit, "target": target})
    assert not r.solved and r.output["within_size"] is False and r.output["stamp_size"] == 64.0
    assert set(r.output) == {"success", "stamp_size", "within_size"}  # nothing about the hidden scans


def test_shape_errors_name_the_whole_expected_shape_and_where_the_payload_left_it(pack):
    def error(cid, payload):
        with pytest.raises(InputError) as e:
            PACK[cid].challenge.score(payload)
        return str(e.value)

    # one scan sent where a list of scans belongs: the old message said "shape [1, 1, 8, 8]"
    assert error("evasion-blackbox", {"inputs": IMG}) == (
        "inputs must be a list of 1 to 100 inputs, each nested lists of shape 1x8x8; "
        "inputs[0] is a list of 8 where a list of 1 belongs")
    assert error("evasion-whitebox", {"input": [[[0.5] * 8] * 7]}) == (
        "input must be nested lists of shape 1x8x8; input[0] is a list of 7 where a list of 8 belongs")
    odd = [[[0.5] * 8 for _ in range(8)]]
    odd[0][2][3] = "0.5"
    assert error("noisy-defence", {"input": odd}) == (
        "input must be nested lists of shape 1x8x8; input[0][2][3] is a string where a number belongs")
    sur = {"W1": [[0.1] * 2] * 8, "b1": [0.0] * 2, "W2": [[0.1] * 2, [0.1] * 3], "b2": [0.0] * 2,
           "W3": [[0.1] * 3] * 2, "b3": [0.0] * 3}
    assert error("extraction", {"surrogate": sur}) == (
        "surrogate.W2 must be nested lists of shape 2x2; surrogate.W2[1] is a list of 3 where a list of 2 belongs")
    assert error("membership", {"inputs": "all"}) == (
        "inputs must be a list of 1 to 200 inputs, each nested lists of shape 20; it is a string")


def test_backdoor_solver_searches_on_one_thread_with_a_bounded_number_of_steps(pack, monkeypatch):
    # Issue 12 measured the solver at 104-119 s (60 s CPU): torch's threads spinning on work too
    # small to split, for 300 steps. Timings are the benchmark's business (arena_solvers.md); here
    # the two causes: the search runs on one thread (and the count is restored), with at most 150 steps.
    spec = PACK["backdoor"]
    seen = {}

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        seen.update(threads=torch.get_num_threads(), steps=kwargs["steps"])
        raise Stop

    monkeypatch.setitem(spec.solve.__globals__, "reverse_engineer_triggers", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(Stop):
            spec.solve(LocalClient(spec))
        assert seen["threads"] == 1 and seen["steps"] <= 150
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_jailbreak_is_judged_on_the_reply_alone(pack):
    spec = PACK["jailbreak"]
    ch, said = spec.challenge, spec.solve.__globals__["said"]
    assert ch.phrase in ch.system  # the bot is told the phrase; only its reply counts
    assert said("access granted", "Sure:  ACCESS\n granted!") and not said("access granted", "access is granted")
    r = score(ch, {"prompt": "What is the capital of France?"})
    assert not r.solved and r.output["said_it"] is False and r.cost == 1
    # what it generated is charged to the player's token budget (at most the 32 it may generate)
    assert 1 <= r.tokens <= 32 and ch.token_cost({"prompt": "hi", "max_new_tokens": 5}) == 5
