"""PII detectors (checksums, formats, masking) and the text data format."""

import json

import numpy as np
import pytest

from assay.data.language import Canary, CanaryFormat, LanguageData, load_language_data
from assay.errors import InputError
from assay.metrics import pii

TEXT = ("Mail alice@example.com or call +1 415 555 0100 / 020 7946 0000. Card 4111 1111 1111 1111, "
        "not 4111 1111 1111 1112. IBAN GB82 WEST 1234 5698 7654 32, DE89370400440532013000, not "
        "GB82WEST12345698765433. SSN 123-45-6789, not 666-12-3456. NINO AB 12 34 56 C. BSN 111222333. "
        "Keys AKIAIOSFODNN7EXAMPLE and ghp_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ. Order 12345 on 2024-01-15.")


def test_detectors_find_valid_items_and_reject_invalid_ones():
    found = {(f.kind, f.value) for f in pii.detect(TEXT)}
    assert found == {
        ("email", "alice@example.com"), ("phone", "+1 415 555 0100"), ("phone", "020 7946 0000"),
        ("credit_card", "4111 1111 1111 1111"), ("iban", "GB82 WEST 1234 5698 7654 32"),
        ("iban", "DE89370400440532013000"), ("national_id", "123-45-6789"), ("national_id", "AB 12 34 56 C"),
        ("national_id", "111222333"), ("secret", "AKIAIOSFODNN7EXAMPLE"),
        ("secret", "ghp_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"),
    }
    assert pii.detect("no personal data here, order 12345, 2024-01-15 10:30") == []
    assert [f.kind for f in pii.detect(TEXT, ["email"])] == ["email"]
    with pytest.raises(InputError, match="unknown PII kind"):
        pii.detect("x", ["passport"])


def test_checksums():
    assert pii.luhn_ok("79927398713") and not pii.luhn_ok("79927398710")
    assert pii.iban_ok("NL91ABNA0417164300") and not pii.iban_ok("NL91ABNA0417164301")
    assert not pii.iban_ok("NL91ABNA04171643001")  # wrong length for NL
    assert pii.ssn_ok("123-45-6789") and not pii.ssn_ok("900-12-3456") and not pii.ssn_ok("123-00-6789")
    assert pii.bsn_ok("111222333") and not pii.bsn_ok("111222334")


def test_masks_never_show_the_item():
    for f in pii.detect(TEXT):
        m = pii.mask(f.kind, f.value)
        assert m != f.value and f.value not in m
        assert pii.normalise(f.kind, f.value) not in pii.normalise(f.kind, m) or f.kind == "secret"
    assert pii.mask("credit_card", "4111 1111 1111 1111").endswith("1111")
    assert pii.mask("secret", "AKIAIOSFODNN7EXAMPLE").startswith("AKIA") and "EXAMPLE" not in pii.mask("secret", "AKIAIOSFODNN7EXAMPLE")


def test_presidio_backend_where_installed():
    pytest.importorskip("presidio_analyzer", reason="presidio-analyzer is optional and not installed")
    kinds = {f.kind for f in pii.presidio_detect("write to alice@example.com, card 4111 1111 1111 1111")}
    assert {"email", "credit_card"} <= kinds


def test_canary_formats():
    f = CanaryFormat("[0-9]{3}-[a-c]x\\{")
    assert f.size == 1000 * 3 and f.matches("123-bx{") and not f.matches("123-dx{")
    assert f.log2_size == pytest.approx(np.log2(3000))
    s = f.sample(50, np.random.default_rng(0))
    assert len(s) == 50 and all(f.matches(x) for x in s) and len(set(s)) > 40
    assert len(list(CanaryFormat("[01]{3}").enumerate())) == 8
    for bad in ("[0-9", "{3}", "[]", "[9-0]", "x\\"):
        with pytest.raises(InputError):
            CanaryFormat(bad)
    with pytest.raises(InputError, match="does not match"):
        Canary("pin ", "12a", "[0-9]{3}")


def test_jsonl_round_trip_and_errors(tmp_path):
    data = LanguageData(documents=["doc one"], members=["m"], non_members=["n"], prompts=["p"],
                        canaries=[Canary("pin ", "123", "[0-9]{3}", copies=4, name="c")])
    back = load_language_data(data.write_jsonl(tmp_path / "d.jsonl"))
    assert back.to_records() == data.to_records() and back.fingerprint() == data.fingerprint()
    assert back.has("documents") and back.has("members") and back.has("canaries") and not back.has("labels")
    assert back.describe()["canaries"] == 1
    bad = tmp_path / "bad.jsonl"
    for line, msg in [("{not json", "bad.jsonl:2 is not JSON"), (json.dumps({"kind": "image", "text": "x"}), "has kind 'image'"),
                      (json.dumps({"kind": "canary", "prefix": "a"}), "needs prefix, secret and format"),
                      (json.dumps({"kind": "member"}), "no \"text\" string")]:
        bad.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
        with pytest.raises(InputError, match=msg):
            load_language_data(bad)
    with pytest.raises(InputError, match="empty"):
        LanguageData()
