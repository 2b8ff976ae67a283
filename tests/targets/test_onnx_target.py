import warnings

import pytest
import torch
from torch import nn

from assay.data.demo import DigitsCNN
from assay.errors import BudgetExceeded, InputError, TargetError
from assay.targets import GRADIENTS, OnnxTarget


def export_onnx(model: nn.Module, path, example: torch.Tensor, dynamic_batch: bool = True) -> None:
    """Legacy (TorchScript-based) exporter: well under a second, unlike the dynamo one."""
    axes = {"x": {0: "batch"}, "out": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, input_names=["x"],
                          output_names=["out"], dynamic_axes=axes)


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    export_onnx(model, path, torch.rand(2, 1, 8, 8))
    return model, path


def test_agrees_with_torch_and_infers_shape(cnn_onnx):
    model, path = cnn_onnx
    t = OnnxTarget(path, query_budget=100)
    assert t.input_shape == (1, 8, 8) and t.num_classes == 10 and t.output == "logits"
    assert not t.has(GRADIENTS)
    x = torch.rand(37, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # dynamic batch of 37
    with torch.no_grad():
        ref = model(x)
    assert (t.scores(x) - ref).abs().max().item() < 1e-4
    assert t.queries == 37
    with pytest.raises(BudgetExceeded):
        t.scores(x[:64].repeat(2, 1, 1, 1))
    assert t.queries == 37


def test_loads_from_bytes_and_batches(cnn_onnx):
    model, path = cnn_onnx
    t = OnnxTarget(path.read_bytes(), batch_size=4)
    x = torch.rand(10, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(t.labels(x), model(x).argmax(1))


def test_auto_detects_probabilities(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 3), nn.Softmax(dim=1))
    export_onnx(net, tmp_path / "p.onnx", torch.rand(2, 6))
    assert OnnxTarget(tmp_path / "p.onnx", output="auto").output == "probs"
    logits = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    export_onnx(logits, tmp_path / "l.onnx", torch.rand(2, 6))
    assert OnnxTarget(tmp_path / "l.onnx", output="auto").output == "logits"


def test_input_shape_rules(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    export_onnx(net, tmp_path / "static.onnx", torch.rand(1, 6), dynamic_batch=False)
    with pytest.raises(TargetError, match="input shape"):
        OnnxTarget(tmp_path / "static.onnx", input_shape=(5,))
    # a model exported with its batch fixed to 1 still answers a batch of 3 (fed one at a time)
    t = OnnxTarget(tmp_path / "static.onnx")
    x = torch.rand(3, 6)
    with torch.no_grad():
        assert (t.scores(x) - net(x)).abs().max().item() < 1e-5


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        OnnxTarget(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(TargetError, match="valid .onnx") as e:
        OnnxTarget(tmp_path / "junk.onnx")
    assert "\n" not in str(e.value)
