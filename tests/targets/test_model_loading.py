import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from assay.data.demo import DigitsCNN
from assay.errors import InputError, TargetError, UnsafeModelFile
from assay.targets import load_target

FACTORY = "assay.data.demo:build_demo_model"


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return DigitsCNN().eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def agree(target, model, x):
    with torch.no_grad():
        return (target.scores(x) - model(x)).abs().max().item() < 1e-5


def one_line(exc_info) -> bool:
    return "\n" not in str(exc_info.value)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputError, match="does not exist") as e:
        load_target(tmp_path / "nope.pt")
    assert "nope.pt" in str(e.value)
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown model kind '.h5'"):
        load_target(tmp_path / "model.h5")


def test_safetensors_with_factory(tmp_path, cnn, x):
    path = tmp_path / "w.safetensors"
    save_file(cnn.state_dict(), str(path))
    t = load_target(path, factory=FACTORY, input_shape=(1, 8, 8), device="cpu", query_budget=10)
    assert t.kind == "torch" and t.num_classes == 10 and agree(t, cnn, x)
    with pytest.raises(InputError, match="--factory"):
        load_target(path)
    with pytest.raises(InputError, match="--input-shape"):
        load_target(path, factory=FACTORY)
    with pytest.raises(InputError, match="package.module:function"):
        load_target(path, factory="no_colon", input_shape=(1, 8, 8))
    with pytest.raises(InputError, match="cannot import"):
        load_target(path, factory="no.such.module:f", input_shape=(1, 8, 8))


def test_safetensors_mismatch_is_one_line(tmp_path):
    path = tmp_path / "w3.safetensors"
    save_file(DigitsCNN(num_classes=3).state_dict(), str(path))
    with pytest.raises(TargetError, match=r"do not fit .*other shapes .*classifier\.3\.weight") as e:
        load_target(path, factory=FACTORY, input_shape=(1, 8, 8))
    assert one_line(e)
    sd = DigitsCNN().state_dict()
    sd.pop("features.0.bias")
    sd["extra"] = torch.zeros(1)
    save_file(sd, str(path))
    with pytest.raises(TargetError, match="1 missing .*features.0.bias.*1 unexpected"):
        load_target(path, factory=FACTORY, input_shape=(1, 8, 8))


def test_torchscript(tmp_path, cnn, x):
    scripted = torch.jit.trace(cnn, torch.rand(1, 1, 8, 8))
    for name in ("m.ts", "m.pt"):
        scripted.save(str(tmp_path / name))
        t = load_target(tmp_path / name, input_shape=(1, 8, 8), device="cpu")
        assert agree(t, cnn, x)
    with pytest.raises(InputError, match="--input-shape"):
        load_target(tmp_path / "m.ts")


def test_state_dict_pt_and_nested_checkpoint(tmp_path, cnn, x):
    torch.save(cnn.state_dict(), tmp_path / "sd.pth")
    with pytest.raises(InputError, match="state_dict .*--factory"):
        load_target(tmp_path / "sd.pth", input_shape=(1, 8, 8))
    assert agree(load_target(tmp_path / "sd.pth", factory=FACTORY, input_shape=(1, 8, 8), device="cpu"), cnn, x)
    torch.save({"epoch": 3, "model_state_dict": cnn.state_dict()}, tmp_path / "ckpt.pt")
    assert agree(load_target(tmp_path / "ckpt.pt", factory=FACTORY, input_shape=(1, 8, 8), device="cpu"), cnn, x)


def test_pickled_module_is_refused_unless_trusted(tmp_path, cnn, x):
    path = tmp_path / "full.pt"
    torch.save(cnn, path)
    with pytest.raises(UnsafeModelFile, match="pickle file that can run arbitrary code") as e:
        load_target(path, input_shape=(1, 8, 8))
    assert "--trust-pickle" in str(e.value) and one_line(e)
    t = load_target(path, trust_pickle=True, input_shape=(1, 8, 8), device="cpu", mean=[0.0], std=[1.0])
    assert agree(t, cnn, x)


class _Payload:
    """A pickle that would create a file when loaded: the refusal must stop it from running."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickles_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for name in ("evil.pkl", "evil.joblib", "evil.pt"):
        with open(tmp_path / name, "wb") as f:
            pickle.dump(_Payload(marker), f)
        with pytest.raises(UnsafeModelFile):
            load_target(tmp_path / name, input_shape=(4,))
        assert not marker.exists(), name


@pytest.fixture(scope="module")
def tabular():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(60, 5)).astype(np.float32)
    ys = (xs[:, 0] + xs[:, 1] > 0).astype(int)
    return xs, ys


def test_joblib_sklearn_needs_trust(tmp_path, tabular):
    xs, ys = tabular
    clf = LogisticRegression().fit(xs, ys)
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    with pytest.raises(UnsafeModelFile):
        load_target(path)
    t = load_target(path, trust_pickle=True)
    assert t.kind == "sklearn" and t.input_shape == (5,)  # inferred from n_features_in_
    assert t.bounds[0] == -np.inf  # scikit-learn default: unbounded features
    np.testing.assert_allclose(t.scores(torch.from_numpy(xs)).numpy(), clf.predict_proba(xs), atol=1e-6)
    with open(tmp_path / "clf.pkl", "wb") as f:
        pickle.dump(clf, f)
    assert load_target(tmp_path / "clf.pkl", trust_pickle=True, bounds=(-10, 10)).bounds == (-10.0, 10.0)


class ThresholdClassifier(ClassifierMixin, BaseEstimator):
    """A custom estimator: skops does not trust its type."""

    def fit(self, xs, ys):
        self.classes_ = np.unique(ys)
        self.n_features_in_ = xs.shape[1]
        return self

    def predict(self, xs):
        return (xs[:, 0] > 0).astype(int)


def test_skops_trusted_and_untrusted_types(tmp_path, tabular):
    import skops.io as sio

    xs, ys = tabular
    clf = LogisticRegression().fit(xs, ys)
    sio.dump(clf, tmp_path / "clf.skops")
    t = load_target(tmp_path / "clf.skops")  # only types skops trusts: no flag needed
    np.testing.assert_allclose(t.scores(torch.from_numpy(xs)).numpy(), clf.predict_proba(xs), atol=1e-6)
    sio.dump(ThresholdClassifier().fit(xs, ys), tmp_path / "custom.skops")
    with pytest.raises(UnsafeModelFile, match="ThresholdClassifier") as e:
        load_target(tmp_path / "custom.skops")
    assert one_line(e)
    t = load_target(tmp_path / "custom.skops", trust_pickle=True)
    assert t.output == "labels" and t.labels(torch.from_numpy(xs)).tolist() == (xs[:, 0] > 0).astype(int).tolist()


def test_onnx_and_url_sources(tmp_path, cnn, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(cnn, (torch.rand(1, 1, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "b"}})
    t = load_target(tmp_path / "m.onnx")
    assert t.kind == "onnx" and t.input_shape == (1, 8, 8) and agree(t, cnn, x)
    with pytest.raises(InputError, match="--input-shape and --num-classes"):
        load_target("http://127.0.0.1:1/predict")
    h = load_target("http://127.0.0.1:1/predict", input_shape=(4,), num_classes=2, query_budget=3,
                    http_options={"output": "probs", "retries": 0})
    assert h.kind == "http" and h.output == "probs" and h.budget.limit == 3


def test_corrupt_torch_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"definitely not a model")
    with pytest.raises(TargetError, match="junk.pt") as e:
        load_target(tmp_path / "junk.pt", input_shape=(4,))
    assert one_line(e)
