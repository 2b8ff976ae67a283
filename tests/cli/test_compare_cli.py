"""`assay compare` on the command line: two model files, the delta policy as the exit code, and
`--reports` refusing audits of different inputs with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli import _one_line_error, run_cli


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from safetensors.torch import save_file
    from torch.nn.utils import prune

    from assay.data.demo import build_demo_model, write_demo

    out = tmp_path_factory.mktemp("cmp")
    model_path, data_path = write_demo(out, seed=0)
    from safetensors.torch import load_file

    net = build_demo_model()
    net.load_state_dict(load_file(str(model_path)))
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            prune.l1_unstructured(m, "weight", amount=0.8)
            prune.remove(m, "weight")
    pruned = out / "pruned.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(pruned))
    return out, model_path, pruned, data_path


ARGS = ["--factory", "assay.data.demo:build_demo_model", "--probe", "robustness.corruption",
        "--param", "robustness.corruption.severities=3", "--param", "robustness.corruption.max_samples=300",
        "--n-boot", "300"]


def test_compare_two_files_and_gate_on_the_delta_policy(two_models, tmp_path):
    out, base, pruned, data = two_models
    loose = tmp_path / "loose.toml"
    loose.write_text('["robustness.corruption"]\nclean_accuracy = { fail_below = -1.0 }\n')
    r = run_cli("compare", str(base), str(pruned), "--data", str(data), *ARGS, "--names", "fp32,pruned80",
                "--policy", str(loose), "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "a" / "comparison.json").read_text())
    acc = next(x for p in d["pairs"] for x in p["deltas"] if x["metric"] == "clean_accuracy")
    assert acc["test"] == "mcnemar exact" and acc["delta"] < 0 and acc["lost"] > acc["gained"]
    assert (tmp_path / "a" / "comparison.html").exists() and (tmp_path / "a" / "pruned80" / "report.json").exists()
    # the same change against a rule it breaks: exit code 1, the failing metric named
    strict = tmp_path / "strict.toml"
    strict.write_text(f'["robustness.corruption"]\nclean_accuracy = {{ fail_below = {acc["delta"] / 2:.4f} }}\n')
    r = run_cli("compare", str(base), str(pruned), "--data", str(data), *ARGS, "--policy", str(strict),
                "--out", str(tmp_path / "b"))
    assert r.returncode == 1, r.stderr
    assert "clean_accuracy" in r.stderr


def test_compare_reports_refuses_different_inputs_in_one_line(two_models, tmp_path):
    out, base, pruned, data = two_models
    small = tmp_path / "small.npz"
    d = dict(np.load(data))
    np.savez(small, **{k: v[:300] for k, v in d.items()})
    for name, model, dat in (("a", base, data), ("b", pruned, small)):
        r = run_cli("audit", str(model), "--data", str(dat), "--factory", "assay.data.demo:build_demo_model",
                    "--probe", "robustness.corruption", "--param", "robustness.corruption.max_samples=100",
                    "--out", str(tmp_path / name), "--quiet")
        assert r.returncode in (0, 1), r.stderr
    r = run_cli("compare", "--reports", str(tmp_path / "a" / "report.json"), str(tmp_path / "b" / "report.json"),
                "--out", str(tmp_path / "c"))
    line = _one_line_error(r, code=2)
    assert "the data differ" in line
    r = run_cli("compare", str(base), str(pruned), "--factory", "assay.data.demo:build_demo_model")
    assert "--data is required" in _one_line_error(r, code=2)
