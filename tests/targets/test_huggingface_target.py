import pytest
import torch

transformers = pytest.importorskip("transformers")

from assay.errors import BudgetExceeded, InputError, TargetError  # noqa: E402
from assay.targets import GRADIENTS, HuggingFaceTarget, load_target  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "is", "the", "great", "awful"]


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=3,
                                 id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    transformers.ViTForImageClassification(cfg).save_pretrained(d)
    processor = transformers.ViTImageProcessor(image_mean=[0.5], image_std=[0.25], size={"height": 8, "width": 8})
    processor.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})
    tok.save_pretrained(d)
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, num_labels=2)
    transformers.BertForSequenceClassification(cfg).save_pretrained(d)
    return d


def test_image_model_is_white_box_with_explicit_normalization(vit_dir):
    t = HuggingFaceTarget.from_pretrained(vit_dir, device="cpu", query_budget=50)
    assert t.input_shape == (1, 8, 8) and t.num_classes == 3 and t.bounds == (0.0, 1.0)
    assert t.mean == [0.5] and t.std == [0.25] and t.class_names == ["a", "b", "c"]
    assert t.has(GRADIENTS)
    ref_model = transformers.ViTForImageClassification.from_pretrained(vit_dir).eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = ref_model(pixel_values=(x - 0.5) / 0.25).logits
    assert torch.allclose(t.scores(x), ref, atol=1e-5)
    # gradients flow to the [0, 1] pixels through the counted module
    xg = x.clone().requires_grad_(True)
    t.module(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert t.queries == 8


def test_text_model_scores_strings(bert_dir):
    t = HuggingFaceTarget.from_pretrained(bert_dir, query_budget=5, device="cpu")
    assert t.kind == "huggingface-text" and t.num_classes == 2 and t.input_shape == ()
    texts = ["the movie is great", "awful", "good good good"]
    model = transformers.BertForSequenceClassification.from_pretrained(bert_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(bert_dir)
    with torch.no_grad():
        ref = model(**tok(texts, padding=True, return_tensors="pt")).logits
    assert torch.allclose(t.scores(texts), ref, atol=1e-5)
    assert t.labels(["bad movie"]).shape == (1,)
    assert t.queries == 4
    with pytest.raises(BudgetExceeded):
        t.scores(texts)
    with pytest.raises(TargetError, match="list of strings"):
        t.scores([1, 2])


def test_load_target_dispatches_directories(vit_dir, bert_dir, tmp_path):
    assert load_target(vit_dir, device="cpu").kind == "huggingface-image"
    assert load_target(bert_dir).kind == "huggingface-text"
    with pytest.raises(InputError, match="config.json"):
        load_target(tmp_path)
    with pytest.raises(InputError, match="task"):
        HuggingFaceTarget.from_pretrained(vit_dir, task="translation")
