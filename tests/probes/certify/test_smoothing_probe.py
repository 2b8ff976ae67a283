
from assay.data.dataset import Dataset
from assay.engine.context import ProbeContext
from assay.guarantees.smoothing import Smoothed, certified_accuracy
from assay.probes.certify.smoothing import SmoothingProbe
from assay.targets.torch import TorchTarget

PARAMS = dict(sigma=0.25, n0=50, n=500, alpha=0.01, radii=[0.0, 0.25, 0.5], max_samples=16,
              attack_steps=5, attack_eot=2, attack_n=200)


def test_probe_certifies_counts_every_query_and_matches_a_direct_certification(demo):
    model, s = demo
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10)
    data = Dataset(s.x_test[:16], s.y_test[:16])
    probe = SmoothingProbe(**PARAMS)
    f = probe.run(ProbeContext(target, data, probe_name=probe.name, seed=5))
    assert f.error is None
    direct = Smoothed(model.eval(), 10, sigma=0.25).certify(data.x, n0=50, n=500, alpha=0.01, seed=5)
    expected = certified_accuracy(direct, data.y, PARAMS["radii"])
    got = [f.metric(f"certified_accuracy[l2,r={r:.3g}]").value for r in PARAMS["radii"]]
    assert got == expected and got == sorted(got, reverse=True) and got[0] > 0.5
    head = f.metric("certified_accuracy")
    assert head.value == got[1] and head.low <= head.value <= head.high
    # a certificate can never beat an attack on the same smoothed model (beyond sampling slack)
    for r in (0.25, 0.5):
        assert f.metric(f"certified_accuracy[l2,r={r:.3g}]").value <= \
            f.metric(f"empirical_robust_accuracy[l2,r={r:.3g}]").value + 0.15
    assert target.queries >= 16 * (50 + 500)  # the noisy samples went through the counted module


def test_probe_on_a_label_only_target_certifies_without_the_attack(demo):
    model, s = demo
    white = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10)

    class LabelsOnly(TorchTarget):
        capabilities = property(lambda self: frozenset({"labels"}), lambda self, v: None)

    target = LabelsOnly(model, input_shape=(1, 8, 8), num_classes=10)
    data = Dataset(s.x_test[:8], s.y_test[:8])
    f = SmoothingProbe(**PARAMS).run(ProbeContext(target, data, probe_name="certify.smoothing", seed=1))
    assert any("no gradients" in w for w in f.warnings)
    assert not any(m.name.startswith("empirical") for m in f.metrics)
    direct = Smoothed(white.module, 10, sigma=0.25).certify(data.x, n0=50, n=500, alpha=0.01, seed=1)
    assert f.metric("certified_accuracy[l2,r=0]").value == certified_accuracy(direct, data.y, [0.0])[0]
