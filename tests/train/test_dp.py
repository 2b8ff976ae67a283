import json

import pytest
import torch
from torch import nn

from assay.errors import InputError
from assay.train import default_delta, train_dp


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add contention
    yield
    torch.set_num_threads(n)


def _data(n=200, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_is_the_accountants_for_the_same_settings(accountant):
    from opacus.accountants import PRVAccountant, RDPAccountant

    x, y = _data()
    r = train_dp(nn.Linear(5, 2), x, y, noise_multiplier=1.1, epochs=3, batch_size=40, delta=1e-5,
                 accountant=accountant)
    assert (r.steps, r.sample_rate, r.noise_multiplier, r.delta) == (15, 0.2, 1.1, 1e-5)
    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    for _ in range(15):
        acc.step(noise_multiplier=1.1, sample_rate=0.2)
    assert r.epsilon_spent == pytest.approx(acc.get_epsilon(1e-5), abs=1e-6)


def test_target_epsilon_is_met_not_exceeded():
    x, y = _data()
    r = train_dp(nn.Linear(5, 2), x, y, epsilon=2.0, epochs=4, batch_size=40)
    assert 1.9 <= r.epsilon_spent <= 2.0
    assert r.target_epsilon == 2.0 and r.noise_multiplier > 0.5
    assert r.delta == default_delta(200) == 1e-5


def test_returns_a_plain_trained_module_in_eval_mode():
    x, y = _data(400)
    template = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in template.state_dict().items()}
    r = train_dp(template, x, y, noise_multiplier=0.5, epochs=5, batch_size=50, lr=0.5, seed=1)
    m = r.model
    assert type(m) is nn.Sequential and not m.training
    assert set(m.state_dict()) == set(before)  # no "_module." prefix: loads into the plain architecture
    assert all(not mod._forward_hooks and not mod._backward_hooks for mod in m.modules())
    assert all(not hasattr(p, "grad_sample") for p in m.parameters())
    assert all(torch.equal(template.state_dict()[k], v) for k, v in before.items())  # argument untouched
    acc = (m(x).argmax(1) == y).float().mean()
    assert acc > 0.85  # it learned despite clipping and noise


def test_seeded():
    x, y = _data()
    factory = lambda: nn.Linear(5, 2)  # noqa: E731
    a = train_dp(factory, x, y, noise_multiplier=1.0, epochs=2, batch_size=40, seed=3).model
    b = train_dp(factory, x, y, noise_multiplier=1.0, epochs=2, batch_size=40, seed=3).model
    c = train_dp(factory, x, y, noise_multiplier=1.0, epochs=2, batch_size=40, seed=4).model
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


def test_batchnorm_is_refused_with_the_fix():
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with pytest.raises(InputError) as e:
        train_dp(model, *_data(), noise_multiplier=1.0, epochs=1)
    assert "GroupNorm" in str(e.value) and "ModuleValidator.fix" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kw", [
    {}, {"epsilon": 1.0, "noise_multiplier": 1.0}, {"epsilon": -1.0}, {"noise_multiplier": 0.0},
    {"noise_multiplier": 1.0, "accountant": "gdp2"}, {"noise_multiplier": 1.0, "delta": 1.5},
    {"noise_multiplier": 1.0, "batch_size": 1000},
])
def test_bad_arguments(kw):
    with pytest.raises(InputError):
        train_dp(nn.Linear(5, 2), *_data(), **kw)


def test_default_delta_is_below_one_over_n():
    assert default_delta(1000) == 1e-5
    n = 10**6
    assert default_delta(n) == pytest.approx(n ** -1.1) and default_delta(n) < 1 / n


def test_cli_trains_the_demo_with_dp(tmp_path, capsys):
    from opacus.accountants import RDPAccountant
    from safetensors.torch import load_file

    from assay.cli import main
    from assay.data.demo import build_demo_model

    out = tmp_path / "dp"
    rc = main(["train", "--dp", "--epochs", "1", "--noise-multiplier", "1.0", "--batch-size", "250",
               "--out", str(out)])
    assert rc == 0
    info = json.loads((out / "dp.json").read_text())
    assert (info["steps"], info["sample_rate"], info["n_train"]) == (4, 0.25, 1000)
    acc = RDPAccountant()
    acc.history = [(1.0, 0.25, 4)]
    assert info["epsilon_spent"] == pytest.approx(acc.get_epsilon(info["delta"]), abs=1e-6)
    build_demo_model().load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    line = capsys.readouterr().out.strip()
    assert line.startswith("DP-trained") and f"epsilon={info['epsilon_spent']:.3g}" in line


def test_cli_bad_input(tmp_path, capsys):
    from assay.cli import main

    assert main(["train", "--epsilon", "1", "--out", str(tmp_path)]) == 2
    assert main(["train", "--dp", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "need --dp" in err and "--noise-multiplier" in err
    assert not (tmp_path / "model.safetensors").exists()
