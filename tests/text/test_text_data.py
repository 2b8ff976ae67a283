"""Text data: loading CSV / JSON Lines / .txt, the text Dataset, validation, labels, text targets."""

import numpy as np
import pytest
import torch
from conftest import sentences, write_table

from assay.data.dataset import Dataset, align_text_labels, validate
from assay.data.loaders import load_dataset
from assay.data.text import shifted_texts, text_features, word_spans
from assay.errors import InputError, TargetError
from assay.targets import TorchTarget


def test_csv_and_jsonl_give_the_same_text_dataset(tmp_path):
    texts = ["a great film, really", 'NA', "bad plot\nand worse acting", "ünïcode 🎬 review"]
    labels = ["positive", "negative", "negative", "positive"]
    csv = write_table(tmp_path / "r.csv", texts, labels, group=["a", "b", "a", "b"], seen=[1, 0, 0, 1])
    jsonl = write_table(tmp_path / "r.jsonl", texts, labels, group=["a", "b", "a", "b"], seen=[1, 0, 0, 1])
    for path in (csv, jsonl):
        d = load_dataset(path, text="review", sensitive="group", member="seen")
        assert d.kind == "text" and d.x.dtype == object and list(d.x) == texts  # "NA" stays text
        assert d.class_names == ["negative", "positive"] and d.y.tolist() == [1, 0, 0, 1]
        assert d.groups["group"].tolist() == ["a", "b", "a", "b"] and d.member.tolist() == [True, False, False, True]
        assert d.describe()["kind"] == "text" and d.describe()["words_per_text"][2] == 5
    assert load_dataset(csv, text="review").fingerprint() == load_dataset(jsonl, text="review").fingerprint()


def test_text_dataset_fingerprint_subset_and_auto_detection():
    d = Dataset(["ab", "c", "d e"], [0, 1, 0])
    assert d.kind == "text" and len(d) == 3
    # length-prefixed: the same characters split differently are different data
    assert d.fingerprint() != Dataset(["a", "bc", "d e"], [0, 1, 0]).fingerprint()
    assert d.fingerprint() != Dataset(["ab", "c", "d e"], [0, 1, 1]).fingerprint()
    s = d.subset(torch.tensor([2, 0]))
    assert list(s.x) == ["d e", "ab"] and s.y.tolist() == [0, 0] and s.kind == "text"
    assert Dataset(np.zeros((3, 2)), [0, 1, 0]).kind == "tabular"  # numbers stay tensors
    with pytest.raises(InputError, match="rows \\[1\\] are not strings"):
        Dataset(["ok", None], kind="text")


def test_text_loader_errors_name_the_fix(tmp_path):
    csv = write_table(tmp_path / "r.csv", ["good", "bad"], [1, 0])
    with pytest.raises(InputError, match="no column\\(s\\) 'txt'"):
        load_dataset(csv, text="txt")
    with pytest.raises(InputError, match="--text-column"):  # a text column read as a feature table
        load_dataset(csv)
    with pytest.raises(InputError, match="label"):
        load_dataset(csv, text="label")  # label column given as text: it holds numbers
    (tmp_path / "bad.jsonl").write_text('{"text": "fine", "label": 1}\n{"text": "oops"\n')
    with pytest.raises(InputError, match=r"\.jsonl:2 is not JSON"):
        load_dataset(tmp_path / "bad.jsonl")
    (tmp_path / "missing.csv").write_text("review,label\ngood,1\n,0\n")
    with pytest.raises(InputError, match="missing in rows \\[1\\]"):
        load_dataset(tmp_path / "missing.csv", text="review")
    (tmp_path / "nocol.jsonl").write_text('{"body": "fine"}\n')
    with pytest.raises(InputError, match="--text-column"):
        load_dataset(tmp_path / "nocol.jsonl")


def test_ood_text_file_and_txt_lines(tmp_path):
    csv = write_table(tmp_path / "r.csv", ["good film", "bad film"], [1, 0])
    (tmp_path / "ood.txt").write_text("completely different text\n\nabout weather\n")
    d = load_dataset(csv, text="review", ood=tmp_path / "ood.txt")
    assert list(d.x_ood) == ["completely different text", "about weather"] and d.describe()["ood"] == 2
    write_table(tmp_path / "ood.csv", ["x y z"])
    assert list(load_dataset(csv, text="review", ood=tmp_path / "ood.csv").x_ood) == ["x y z"]


def test_class_names_follow_the_models_label_order(sentiment_target):
    # the file names its classes; "negative" sorts first, so the loader numbers it 0, as the model does
    d = Dataset(["good", "bad", "great"], [1, 0, 1], class_names=["negative", "positive"])
    assert align_text_labels(d, sentiment_target).y.tolist() == [1, 0, 1]

    class Flipped:  # a model whose class 0 is "positive": labels must be renumbered, not trusted
        class_names, name = ["POSITIVE", "NEGATIVE"], "flipped"

    assert align_text_labels(d, Flipped).y.tolist() == [0, 1, 0]

    class Generic:
        class_names, name = ["LABEL_0", "LABEL_1"], "generic"

    with pytest.raises(InputError, match="does not name its classes"):
        align_text_labels(d, Generic)
    with pytest.raises(InputError, match="'neutral' are not classes"):
        align_text_labels(Dataset(["x"], [0], class_names=["neutral"]), sentiment_target)


def test_validate_pairs_text_data_with_text_models_only(sentiment_target):
    texts, labels = sentences(4, 3)
    validate(Dataset(texts, labels), sentiment_target)
    with pytest.raises(InputError, match="--text-column"):
        validate(Dataset(np.zeros((4, 3), np.float32), labels), sentiment_target)
    tensor_target = TorchTarget(torch.nn.Linear(3, 2), input_shape=(3,), num_classes=2, device="cpu")
    with pytest.raises(InputError, match="is text but"):
        validate(Dataset(texts, labels), tensor_target)
    with pytest.raises(InputError, match="labels span \\[0, 5\\]"):
        validate(Dataset(texts, [0, 1, 5, 0]), sentiment_target)


def test_target_base_takes_text_batches_and_counts_them(sentiment_model):
    from assay.errors import BudgetExceeded
    from assay.targets import load_target

    t = load_target(sentiment_model, device="cpu", query_budget=7)
    t.batch_size = 2  # chunking of a text batch through the base class
    texts = np.array(["good movie", "bad movie", "the plot was awful"], dtype=object)
    s = t.scores(texts)
    assert s.shape == (3, 2) and t.queries == 3
    assert torch.allclose(s, torch.cat([t.scores(x) for x in texts]), atol=1e-5)  # one string = one text
    assert t.queries == 6
    with pytest.raises(BudgetExceeded):
        t.scores(["one", "two"])
    assert t.queries == 6  # a refused batch charges nothing
    with pytest.raises(TargetError, match="list of strings"):
        load_target(sentiment_model, device="cpu").scores(torch.zeros(2, 3))


def test_text_target_fingerprint_is_the_model_not_the_path(sentiment_model, tmp_path):
    import shutil

    from assay.targets import load_target

    copy = shutil.copytree(sentiment_model, tmp_path / "moved")
    a, b = load_target(sentiment_model, device="cpu"), load_target(copy, device="cpu")
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.model.classifier.bias.add_(1e-3)
    assert a.fingerprint() != b.fingerprint()


def test_text_helpers():
    assert word_spans("don't stop, now") == [(0, 5), (6, 10), (12, 15)]
    f = text_features(["one two three", "ünï x"])
    assert f["words"].tolist() == [3, 2] and f["non_ascii"].tolist() == ["no", "yes"]
    x = np.array(["a b c d", "e f"], dtype=object)
    perm = shifted_texts(x, "permute", seed=1)
    assert sorted(perm[0].split()) == ["a", "b", "c", "d"]
    uni = shifted_texts(x, "uniform", seed=1)
    assert [len(t.split()) for t in uni] == [4, 2] and set(" ".join(uni).split()) <= set("abcdef")
    assert (shifted_texts(x, "noise", seed=1) != x).any()
    with pytest.raises(InputError, match="shift="):
        shifted_texts(x, "blur")
