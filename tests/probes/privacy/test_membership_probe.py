"""Reference models, the membership and unlearning probes on real (tiny) trained models."""

import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from assay.attacks.privacy import label_only_scores
from assay.attacks.privacy.reference import (
    SklearnRecipe,
    TorchRecipe,
    balanced_membership,
    load_recipe,
    predict_log_probs,
    train_reference_models,
)
from assay.data.dataset import Dataset
from assay.engine.context import ProbeContext
from assay.errors import InputError, NotApplicable
from assay.parallel import InProcessExecutor, ProcessPoolExecutorAdapter
from assay.probes.privacy.membership import MembershipProbe
from assay.probes.privacy.unlearning import UnlearningProbe
from assay.targets.torch import TorchTarget
from assay.train.classifier import train_classifier

N_FEATURES = 20
N_CLASSES = 4


def mlp():
    return nn.Sequential(nn.Linear(N_FEATURES, 128), nn.ReLU(), nn.Linear(128, N_CLASSES))


def _pool(n=600, seed=0):
    """4-class tabular data with 40% random labels: only memorisation fits the noisy labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, N_FEATURES, generator=g)
    y = x[:, :N_CLASSES].argmax(1)
    noisy = torch.rand(n, generator=g) < 0.4
    y = torch.where(noisy, torch.randint(0, N_CLASSES, (n,), generator=g), y)
    member = torch.zeros(n, dtype=torch.bool)
    member[torch.randperm(n, generator=g)[: n // 2]] = True
    return x, y, member


OVERFIT = {"epochs": 80, "lr": 1e-2, "batch_size": 64, "weight_decay": 0.0}
REGULARISED = {"epochs": 15, "lr": 1e-2, "batch_size": 64, "weight_decay": 0.05}


@pytest.fixture(scope="module")
def pool():
    return _pool()


def _target(x, y, member, settings, seed=0):
    torch.manual_seed(seed)
    model = train_classifier(mlp(), x[member], y[member], seed=seed, **settings)
    return TorchTarget(model, input_shape=(N_FEATURES,), num_classes=N_CLASSES, device="cpu")


@pytest.fixture(scope="module")
def overfit_run(pool, tmp_path_factory):
    x, y, member = pool
    target = _target(x, y, member, OVERFIT)
    data = Dataset(x, y, member=member, groups={"site": np.where(np.arange(len(x)) % 2 == 0, "a", "b")})
    workdir = tmp_path_factory.mktemp("work")
    probe = MembershipProbe(n_reference=4, fprs=[0.01], attacks=["baseline", "lira", "rmia", "label_only"],
                            label_only_copies=8, label_only_sigma=0.05, train_epochs=OVERFIT["epochs"],
                            train_lr=OVERFIT["lr"], train_weight_decay=0.0)
    finding = probe.run(ProbeContext(target, data, workdir=workdir))
    return finding, target, data, workdir, probe


def test_overfit_model_is_exposed_at_low_fpr(overfit_run):
    f, target, data, _, _ = overfit_run
    lira = f.metric("tpr_at_fpr[lira,fpr=0.01]")
    assert lira.value > 0.2 and lira.low > 0.1  # >= 10x chance, interval included
    assert f.metric("tpr_at_fpr[rmia,fpr=0.01]").value > 0.15
    # the reference-based attacks beat the population baseline at low FPR
    assert lira.value > f.metric("tpr_at_fpr[baseline,fpr=0.01]").value
    assert f.metric("auc[label_only]").value > 0.6
    assert f.metric("epsilon_lower_bound[lira]").value > 0.5
    assert f.verdict == "fail"
    assert f.accounting["reference_trained"] == 4
    kinds = {e.kind for e in f.evidence}
    assert {"curve", "table", "bars", "histogram"} <= kinds
    roc_ev = next(e for e in f.evidence if e.kind == "curve")
    assert roc_ev.data["logx"] and roc_ev.data["logy"]
    assert any(e.title.startswith("By site") for e in f.evidence)
    # the not-estimable text is absent: 300 non-members measure FPR 1%
    assert not any(e.title == "Not estimable" for e in f.evidence)


def test_regularised_model_is_near_chance_and_verdicts_differ(pool, overfit_run):
    x, y, member = pool
    target = _target(x, y, member, REGULARISED)
    data = Dataset(x, y, member=member)
    probe = MembershipProbe(n_reference=4, fprs=[0.01], train_epochs=REGULARISED["epochs"],
                            train_lr=REGULARISED["lr"], train_weight_decay=REGULARISED["weight_decay"])
    f = probe.run(ProbeContext(target, data))
    assert f.metric("max_auc").value < 0.65
    assert f.metric("max_tpr_at_fpr[fpr=0.01]").value < 0.05
    assert f.verdict in ("pass", "warn") and overfit_run[0].verdict == "fail"


def test_reference_outputs_are_cached_and_reused(overfit_run):
    _, target, data, workdir, probe = overfit_run
    again = probe.run(ProbeContext(target, data, workdir=workdir))
    assert again.accounting["reference_trained"] == 0 and again.accounting["reference_cached"] == 4
    assert again.metric("auc[lira]").value == overfit_run[0].metric("auc[lira]").value
    assert len(list((workdir / "membership-refs").glob("ref-*.npy"))) == 4


def test_balanced_scheme_is_half_in_and_prefix_stable():
    m8 = balanced_membership(8, 101, seed=3)
    assert (m8.sum(0) == 4).all()
    assert torch.equal(balanced_membership(4, 101, seed=3), m8[:4])
    assert (m8.sum(1) >= 50).all() and (m8.sum(1) <= 51).all()
    # never the same half as a plain seeded randperm (a common way to draw the target's members)
    for seed in range(3):
        members = torch.zeros(101, dtype=torch.bool)
        members[torch.randperm(101, generator=torch.Generator().manual_seed(seed))[:50]] = True
        first = balanced_membership(2, 101, seed)[0]
        assert not torch.equal(first, members) and not torch.equal(~first, members)


def test_executors_give_identical_reference_outputs():
    from sklearn.linear_model import LogisticRegression

    x, y, _ = _pool(200)
    recipe = SklearnRecipe(LogisticRegression(C=10.0, max_iter=200))
    local = train_reference_models(recipe, x, y, n_models=2, seed=1, executor=InProcessExecutor())
    proc = train_reference_models(recipe, x, y, n_models=2, seed=1, executor=ProcessPoolExecutorAdapter(2))
    torch.testing.assert_close(local.log_probs, proc.log_probs)
    assert local.log_probs.shape == (2, 1, 200, N_CLASSES)


def test_function_recipe_through_a_process_pool(tmp_path, monkeypatch):
    (tmp_path / "my_recipe_mod.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from assay.train.classifier import train_classifier

        def train(x, y, seed):
            torch.manual_seed(seed)
            net = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 4))
            return train_classifier(net, x, y, epochs=3, seed=seed)

        def wrong(x, y):
            return None
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    x, y, _ = _pool(120)
    recipe = load_recipe("my_recipe_mod:train")
    a = train_reference_models(recipe, x, y, n_models=2, seed=0, executor=ProcessPoolExecutorAdapter(2))
    b = train_reference_models(recipe, x, y, n_models=2, seed=0)
    torch.testing.assert_close(a.log_probs, b.log_probs)
    with pytest.raises(InputError, match="must accept"):
        load_recipe("my_recipe_mod:wrong")
    with pytest.raises(InputError, match="does not import"):
        load_recipe("no_such_module_xyz:train")
    with pytest.raises(InputError, match="has no function"):
        load_recipe("my_recipe_mod:missing")
    with pytest.raises(InputError, match="module:function"):
        load_recipe("just_a_name")
    sys.modules.pop("my_recipe_mod", None)


def test_inference_is_in_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, N_CLASSES)).train()
    x = torch.rand(32, N_FEATURES)
    first = predict_log_probs(net, x, N_CLASSES)
    second = predict_log_probs(net, x, N_CLASSES)
    torch.testing.assert_close(first, second)  # dropout active would make these differ
    with torch.no_grad():
        torch.testing.assert_close(first, torch.log_softmax(net.eval()(x), 1))
    net.train()
    with torch.no_grad():
        assert not torch.allclose(torch.log_softmax(net(x), 1), first)  # the model does have dropout


def test_torch_recipe_reinitialises_weights():
    net = mlp()
    recipe = TorchRecipe(net, epochs=1)
    fresh = recipe.fresh(seed=7)
    assert not torch.equal(fresh[0].weight, net[0].weight)
    assert torch.equal(recipe.fresh(seed=7)[0].weight, fresh[0].weight)

    class NoReset(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

    with pytest.raises(InputError, match="reset_parameters"):
        TorchRecipe(NoReset())


def test_probe_input_errors(pool):
    x, y, member = pool
    target = TorchTarget(mlp(), input_shape=(N_FEATURES,), num_classes=N_CLASSES, device="cpu")
    probe = MembershipProbe()
    assert "members" in probe.check(target, Dataset(x, y))
    with pytest.raises(InputError, match="member mask"):
        probe.run(ProbeContext(target, Dataset(x, y)))
    with pytest.raises(NotApplicable, match="no requested FPR is measurable"):  # the audit reports it skipped
        MembershipProbe(fprs=[0.001]).run(ProbeContext(target, Dataset(x, y, member=member)))
    with pytest.raises(InputError, match="does not import"):
        MembershipProbe(fprs=[0.01], recipe="nope_mod_abc:fn").run(ProbeContext(target, Dataset(x, y, member=member)))
    with pytest.raises(InputError, match="attacks='magic' of probe privacy.membership is not one of baseline"):
        MembershipProbe(fprs=[0.01], attacks=["magic"]).run(ProbeContext(target, Dataset(x, y, member=member)))
    with pytest.raises(InputError, match="n_reference >= 2"):
        MembershipProbe(fprs=[0.01], n_reference=1).run(ProbeContext(target, Dataset(x, y, member=member)))


def test_label_only_counts_robust_correct_labels():
    # a 1-D threshold model: points far from the boundary keep their label under noise
    x = torch.tensor([[0.9], [0.52], [0.1]])
    y = torch.tensor([1, 1, 0])
    labels_fn = lambda b: (b[:, 0] > 0.5).long()  # noqa: E731
    s = label_only_scores(labels_fn, x, y, n_augment=200, noise_sigma=0.1, seed=0)
    assert s[0] > 0.98 and s[2] > 0.98 and 0.4 < s[1] < 0.7


def test_unlearning_probe_tells_unlearned_from_retrained(pool, tmp_path):
    x, y, _ = pool
    n = len(x)
    split = np.array(["retain"] * n, dtype=object)
    split[: n // 3] = "forget"
    split[n // 3 : 2 * n // 3] = "heldout"
    forget = torch.as_tensor(split == "forget")
    retain = torch.as_tensor(split == "retain")
    data = Dataset(x, y, groups={"unlearning_split": split})
    # "unlearning" that did nothing: still trained on the forget set
    not_unlearned = _target(x, y, forget | retain, OVERFIT)
    retrained = _target(x, y, retain, OVERFIT, seed=1)
    params = dict(attacks=["baseline", "lira"], n_reference=4, fprs=[0.01], train_epochs=OVERFIT["epochs"],
                  train_lr=OVERFIT["lr"])
    alone = UnlearningProbe(**params).run(ProbeContext(not_unlearned, data, workdir=tmp_path))
    assert alone.verdict == "fail" and "max_auc_gap" not in {m.name for m in alone.metrics}
    bad = UnlearningProbe(retrained_target=retrained, **params).run(ProbeContext(not_unlearned, data, workdir=tmp_path))
    assert bad.accounting["reference_cached"] == 4  # same target, data and recipe: nothing retrained
    assert bad.metric("max_auc_gap").value > 0.1 and bad.metric("max_auc_gap").low > 0 and bad.verdict == "fail"
    assert bad.metric("auc[lira]").value > 0.7
    params["n_reference"] = 2
    good = UnlearningProbe(retrained_target=retrained, **params).run(ProbeContext(retrained, data, workdir=tmp_path))
    assert abs(good.metric("max_auc_gap").value) < 1e-9 and good.verdict == "pass"
    with pytest.raises(InputError, match="unlearning_split"):
        UnlearningProbe(**params).run(ProbeContext(retrained, Dataset(x, y)))


def test_sklearn_target_is_cloned_for_reference_models(pool):
    from sklearn.tree import DecisionTreeClassifier

    from assay.targets.sklearn import SklearnTarget

    x, y, member = pool
    tree = DecisionTreeClassifier(random_state=0).fit(x[member].numpy(), y[member].numpy())  # memorises
    target = SklearnTarget(tree, input_shape=(N_FEATURES,), num_classes=N_CLASSES, bounds=(0.0, 1.0))
    f = MembershipProbe(n_reference=2, fprs=[0.01]).run(ProbeContext(target, Dataset(x, y, member=member)))
    assert f.accounting["recipe"].startswith("sklearn:DecisionTreeClassifier")
    assert f.accounting["reference_trained"] == 2
    assert f.metric("auc[rmia]").value > 0.65 and f.verdict == "fail"
