"""The CLI end to end, and every kind of bad input: one line on stderr, non-zero exit, no traceback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from assay.errors import InputError

PY = sys.executable


def run_cli(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    return subprocess.run([PY, "-m", "assay", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    from assay.data.demo import write_demo

    out = tmp_path_factory.mktemp("demo")
    model, data = write_demo(out, seed=0)
    return out, model, data


def _one_line_error(r, code=None):
    assert r.returncode != 0, r.stdout + r.stderr
    if code is not None:
        assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("assay: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_audit_end_to_end_writes_all_reports(demo_files, tmp_path):
    out, model, data = demo_files
    r = run_cli("audit", str(model), "--factory", "assay.data.demo:build_demo_model", "--data", str(data),
                "--probe", "robustness.corruption", "--param", "robustness.corruption.severities=1,3",
                "--param", "robustness.corruption.max_samples=100", "--out", str(tmp_path / "r"))
    assert r.returncode in (0, 1), r.stderr
    for f in ("report.json", "report.html", "junit.xml"):
        assert (tmp_path / "r" / f).exists()
    assert "robustness.corruption" in r.stdout
    r2 = run_cli("report", str(tmp_path / "r" / "report.json"), "--html", "--out", str(tmp_path))
    assert r2.returncode == 0 and (tmp_path / "report.html").exists()


@pytest.mark.parametrize("case", ["missing_model", "missing_data", "unknown_probe", "bad_param", "wrong_shape",
                                  "out_of_range", "pickle", "unreachable_url", "bad_suite", "not_a_report",
                                  "param_for_probe_not_run", "param_for_misspelled_probe", "policy_unknown_probe",
                                  "missing_required_option", "factory_needs_arguments", "bad_device",
                                  "bad_http_option", "bounds_empty", "out_is_a_file", "negative_budget",
                                  "policy_string_value", "feature_count_mismatch", "zero_samples", "attack_version_typo",
                                  "npz_missing_sensitive_key"])
def test_bad_input_one_line(case, demo_files, tmp_path):
    out, model, data = demo_files
    base = [str(model), "--factory", "assay.data.demo:build_demo_model", "--out", str(tmp_path / "o")]
    if case == "missing_model":
        r = run_cli("audit", str(tmp_path / "nope.onnx"), "--data", str(data))
        assert "nope.onnx" in _one_line_error(r)
    elif case == "missing_data":
        r = run_cli("audit", *base, "--data", str(tmp_path / "nope.npz"))
        assert "nope.npz" in _one_line_error(r)
    elif case == "unknown_probe":
        r = run_cli("audit", *base, "--data", str(data), "--probe", "robustness.evasionn")
        assert "unknown probe" in _one_line_error(r, 2)
    elif case == "bad_param":
        r = run_cli("audit", *base, "--data", str(data), "--probe", "robustness.corruption",
                    "--param", "robustness.corruption.max_samples=lots")
        assert "max_samples" in _one_line_error(r, 2)
    elif case == "wrong_shape":
        p = tmp_path / "d.npz"
        np.savez(p, x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
        r = run_cli("audit", *base, "--data", str(p), "--input-shape", "1,8,8")
        assert "shape" in _one_line_error(r, 2)
    elif case == "out_of_range":
        p = tmp_path / "d.npz"
        np.savez(p, x=np.full((4, 1, 8, 8), 255.0, np.float32), y=np.zeros(4, np.int64))
        r = run_cli("audit", *base, "--data", str(p))
        assert "divide by 255" in _one_line_error(r, 2)
    elif case == "pickle":
        import torch

        from assay.data.demo import DigitsCNN

        p = tmp_path / "m.pt"
        torch.save(DigitsCNN(), p)
        r = run_cli("audit", str(p), "--data", str(data), "--out", str(tmp_path / "o"))
        assert "trust-pickle" in _one_line_error(r)
    elif case == "unreachable_url":
        r = run_cli("audit", "http://127.0.0.1:9/score", "--data", str(data), "--num-classes", "10",
                    "--probe", "robustness.blackbox", "--out", str(tmp_path / "o"))
        msg = _one_line_error(r)
        assert "127.0.0.1:9" in msg or "reach" in msg or "connect" in msg
    elif case == "bad_suite":
        r = run_cli("audit", *base, "--data", str(data), "--suite", "nosuch")
        assert "unknown suite" in _one_line_error(r, 2)
    elif case == "not_a_report":
        p = tmp_path / "x.json"
        p.write_text('{"hello": 1}')
        _one_line_error(run_cli("report", str(p), "--html"))
    elif case == "param_for_probe_not_run":  # a silently dropped parameter would audit on defaults
        r = run_cli("audit", *base, "--data", str(data), "--probe", "reliability.calibration",
                    "--param", "robustness.evasion.eps_linf=0.3")
        assert "does not run" in _one_line_error(r, 2)
    elif case == "param_for_misspelled_probe":
        r = run_cli("audit", *base, "--data", str(data), "--suite", "quick",
                    "--param", "reliability.calibratoin.n_bins=3")
        assert "unknown probe 'reliability.calibratoin'" in _one_line_error(r, 2)
    elif case == "policy_unknown_probe":  # a misspelled section must not let a CI gate pass
        p = tmp_path / "policy.toml"
        p.write_text('["robustness.evasoin"]\nrobust_accuracy = { fail_below = 0.99 }\n')
        r = run_cli("audit", *base, "--data", str(data), "--probe", "reliability.calibration", "--policy", str(p))
        assert "robustness.evasoin" in _one_line_error(r, 2)
    elif case == "missing_required_option":
        assert "--data" in _one_line_error(run_cli("audit", *base), 2)
    elif case == "factory_needs_arguments":
        r = run_cli("audit", str(model), "--factory", "torch.nn:BatchNorm2d", "--data", str(data))
        assert "without arguments" in _one_line_error(r, 2)
    elif case == "bad_device":
        import torch

        device = "cuda" if not torch.cuda.is_available() else "gpu"
        r = run_cli("audit", *base, "--data", str(data), "--device", device, "--probe", "reliability.calibration")
        assert "--device" in _one_line_error(r, 2)
    elif case == "bad_http_option":
        r = run_cli("audit", "http://127.0.0.1:9/score", "--data", str(data), "--num-classes", "10",
                    "--http", "timeout=soon")
        assert "timeout" in _one_line_error(r, 2)
    elif case == "bounds_empty":
        r = run_cli("audit", *base, "--data", str(data), "--bounds", "1,0", "--probe", "reliability.calibration")
        assert "--bounds" in _one_line_error(r, 2)
    elif case == "out_is_a_file":
        f = tmp_path / "taken"
        f.write_text("x")
        r = run_cli("audit", str(model), "--factory", "assay.data.demo:build_demo_model", "--data", str(data),
                    "--probe", "reliability.calibration", "--out", str(f))
        assert "--out" in _one_line_error(r, 2)
    elif case == "negative_budget":
        r = run_cli("audit", *base, "--data", str(data), "--query-budget", "-5", "--probe", "reliability.calibration")
        assert "negative" in _one_line_error(r, 2)
    elif case == "policy_string_value":
        p = tmp_path / "policy.toml"
        p.write_text('["reliability.calibration"]\nece = { fail_above = "0.1" }\n')
        r = run_cli("audit", *base, "--data", str(data), "--probe", "reliability.calibration", "--policy", str(p))
        assert "must be a number" in _one_line_error(r, 2)
    elif case == "feature_count_mismatch":  # a scikit-learn model on a table with a column too many
        import skops.io as sio
        from sklearn.linear_model import LogisticRegression

        m = tmp_path / "m.skops"
        sio.dump(LogisticRegression().fit(np.random.rand(20, 3), np.arange(20) % 2), m)
        t = tmp_path / "t.csv"
        t.write_text("a,b,c,d,label\n" + "\n".join(f"{i},{i},{i},{i},{i % 2}" for i in range(20)) + "\n")
        r = run_cli("audit", str(m), "--data", str(t), "--probe", "reliability.calibration", "--out", str(tmp_path / "o"))
        msg = _one_line_error(r, 2)
        assert "--features" in msg and "3" in msg and "4" in msg and "--input-shape" not in msg
    elif case == "zero_samples":
        r = run_cli("audit", *base, "--data", str(data), "--probe", "robustness.corruption",
                    "--param", "robustness.corruption.max_samples=0")
        assert "at least 1" in _one_line_error(r, 2)
    elif case == "attack_version_typo":  # a typo must not silently run a weaker ensemble
        r = run_cli("audit", *base, "--data", str(data), "--probe", "robustness.evasion",
                    "--param", "robustness.evasion.version=standrd")
        assert "standard" in _one_line_error(r, 2)
    elif case == "npz_missing_sensitive_key":
        p = tmp_path / "d.npz"
        np.savez(p, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64), sex=np.zeros(4))
        r = run_cli("audit", *base, "--data", str(p), "--sensitive", "gender", "--probe", "fairness.groups")
        msg = _one_line_error(r, 2)
        assert "gender" in msg and "sex" in msg  # names the flag's value and lists the keys there are


def test_budget_exhausted_is_reported(demo_files, tmp_path):
    out, model, data = demo_files
    r = run_cli("audit", str(model), "--factory", "assay.data.demo:build_demo_model", "--data", str(data),
                "--probe", "robustness.corruption", "--query-budget", "50", "--out", str(tmp_path / "o"))
    _one_line_error(r, 3)
    assert "budget" in r.stderr


def test_kill_9_then_resume(demo_files, tmp_path):
    """An audit killed with SIGKILL midway resumes without redoing finished units."""
    out, model, data = demo_files
    args = ["audit", str(model), "--factory", "assay.data.demo:build_demo_model", "--data", str(data),
            "--probe", "robustness.corruption", "--param", "robustness.corruption.max_samples=1297",
            "--out", str(tmp_path / "o"), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    proc = subprocess.Popen([PY, "-m", "assay", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "o" / ".assay-checkpoint"
    deadline = time.time() + 120
    while time.time() < deadline:
        units = list(ckpt.rglob("*.npz")) if ckpt.exists() else []
        if len(units) >= 6:  # the clean predictions and a few corruption units
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(ckpt.rglob("*.npz")))
    assert 0 < done_before
    r = run_cli(*args[:-1])
    assert r.returncode in (0, 1), r.stderr
    import json

    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    acc = rep["findings"][0]["accounting"]
    assert acc["units_resumed"] == done_before - 1  # every finished unit but the shared clean predictions
    assert acc["units_run"] + acc["units_resumed"] == 30


def test_probes_lists_every_registered_probe_with_its_cost():
    from assay.probes.base import all_probes

    r = run_cli("probes")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    listed = {line.split()[0] for line in r.stdout.splitlines()[1:] if line.strip()}
    assert listed == set(all_probes())
    r = run_cli("probes", "--axis", "certify")
    assert r.returncode == 0 and {line.split()[0] for line in r.stdout.splitlines()[1:]} == {"certify.smoothing"}


def test_an_internal_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import assay.cli as cli

    def broken(_args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_probes", broken)
    monkeypatch.delenv("ASSAY_DEBUG", raising=False)
    assert cli.main(["probes"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("assay: error: internal error (ZeroDivisionError")
    monkeypatch.setenv("ASSAY_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["probes"])


def test_a_policy_rule_naming_no_metric_makes_the_finding_an_error(demo_files, tmp_path):
    out, model, data = demo_files
    p = tmp_path / "policy.toml"
    p.write_text('["reliability.calibration"]\nece_typo = { fail_above = 0.0 }\n')
    args = ["audit", str(model), "--factory", "assay.data.demo:build_demo_model", "--data", str(data),
            "--probe", "reliability.calibration", "--out", str(tmp_path / "o")]
    r = run_cli(*args, "--policy", str(p))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    import json

    finding = json.loads((tmp_path / "o" / "report.json").read_text())["findings"][0]
    assert finding["verdict"] == "error" and "ece_typo" in finding["error"] and "ece" in finding["error"]
    p.write_text('["reliability.calibration"]\nece = { fail_above = 0.0 }\n')  # fixed: a real failing gate
    r = run_cli(*args, "--policy", str(p))
    assert r.returncode == 1 and "resumed from checkpoint" in r.stderr


def test_http_options_follow_the_http_target_signature():
    from assay.cli import _http_options, http_option_types

    types = http_option_types()
    assert types["timeout"] is float and types["retries"] is int and types["batch"] is bool
    assert types["headers"] is dict and types["request_template"] is dict and types["output"] is str
    assert not {"url", "input_shape", "num_classes", "query_budget", "seed"} & set(types)
    got = _http_options(["timeout=2.5", "retries=0", "cache=false", 'headers={"Authorization": "Bearer T"}'])
    assert got == {"timeout": 2.5, "retries": 0, "cache": False, "headers": {"Authorization": "Bearer T"}}
    for bad in ("retries=two", "cache=maybe", "headers=[1]", "query_budget=5", "timeout"):
        with pytest.raises(InputError):
            _http_options([bad])
