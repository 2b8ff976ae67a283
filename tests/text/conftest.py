"""Tiny Hugging Face text classifiers built offline: a WordPiece tokenizer trained on a synthetic
corpus and a one-layer BERT trained for a few seconds, saved with save_pretrained."""

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

POS = ["good", "great", "excellent", "wonderful", "superb", "lovely", "brilliant", "fantastic"]
NEG = ["bad", "awful", "terrible", "horrible", "poor", "dreadful", "boring", "weak"]
# a second dialect's sentiment words: a model trained on standard English alone has never seen them
POS_B = ["gud", "gr8", "dope", "lit", "fire", "sick", "bussin", "peng"]
NEG_B = ["meh", "wack", "trash", "mid", "lame", "whack", "naff", "pants"]
FILL = ["movie", "film", "plot", "actor", "story", "scene", "music", "ending", "cast", "script", "camera",
        "the", "was", "is", "a", "and", "this", "really", "quite", "very", "so", "it"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# made-up film titles, one per review where asked: rare words a model can memorise records by
TITLES = [a + b for a in ["zor", "bex", "qua", "mip", "tul", "vand", "kesh", "plo", "rix", "dun", "fep", "gom",
                          "hax", "jiv", "lum", "nob", "pez", "sav", "wog", "yat"]
          for b in ["ble", "dor", "fax", "gin", "kul", "mox", "pim", "rud", "sep", "tov", "wix", "zed",
                    "bap", "cor", "dil", "fum", "gep", "hob", "jas", "lek"]]


def sentences(n, seed, *, pos=POS, neg=NEG, length=(5, 9), sentiment_at=None, fill=FILL, titles=False):
    """``n`` synthetic reviews and labels (1 = positive): fillers, two sentiment words of the label's
    class and one of the other (at random places, or ``sentiment_at`` = "end"); with ``titles``, each review names its
    own film first (a distinct rare word per review, at most 400)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    names = rng.permutation(TITLES)
    for r in range(n):
        label = int(rng.integers(0, 2))
        k = int(rng.integers(length[0], length[1] + 1))
        words = list(rng.choice(fill, k - 3))
        # two words of the label's sentiment and one of the other: editing one flips the balance
        for word in (str(rng.choice(neg if label else pos)), *rng.choice(pos if label else neg, 2)):
            at = len(words) if sentiment_at == "end" else int(rng.integers(0, len(words) + 1))
            words.insert(at, str(word))
        if titles:
            words.insert(0, str(names[r]))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def _tokenizer(words):
    """WordPiece over whole words plus single characters: a misspelt word falls apart into letters."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    chars = [chr(c) for c in range(33, 127)]
    vocab = SPECIAL + sorted(set(words)) + chars + ["##" + c for c in chars]
    tok = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


# every sentiment word of both dialects, the fillers and titles: one tokenizer vocabulary for every model
VOCAB = POS + NEG + POS_B + NEG_B + FILL + TITLES


def build_text_model(out_dir, texts, labels, *, epochs=30, seed=0, hidden=32, layers=1, lr=5e-3, batch_size=64,
                     names=("negative", "positive")):
    """Train a tiny BERT sequence classifier on (texts, labels) and save it (with its tokenizer) to
    ``out_dir``; returns the directory."""
    torch.manual_seed(seed)
    tok = _tokenizer(VOCAB)
    cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64,
                                  num_labels=2, id2label=dict(enumerate(names)),
                                  label2id={n: i for i, n in enumerate(names)}, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(cfg)
    enc = tok(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
    y = torch.as_tensor(labels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for b in range(0, len(y), batch_size):
            i = perm[b : b + batch_size]
            loss = model(input_ids=enc["input_ids"][i], attention_mask=enc["attention_mask"][i], labels=y[i]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def write_table(path, texts, labels=None, **columns):
    """A CSV (pandas) or JSON Lines file with a ``review`` text column, ``label`` and other columns."""
    import pandas as pd

    df = pd.DataFrame({"review": list(texts), **({"label": list(labels)} if labels is not None else {}),
                       **{k: list(v) for k, v in columns.items()}})
    if str(path).endswith(".jsonl"):
        with open(path, "w") as f:
            for row in df.to_dict("records"):
                f.write(json.dumps(row) + "\n")
    else:
        df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def sentiment_model(tmp_path_factory):
    """An accurate, undefended sentiment classifier (labels named negative / positive)."""
    texts, labels = sentences(600, 0)
    return build_text_model(tmp_path_factory.mktemp("sentiment"), texts, labels, epochs=5)


@pytest.fixture(scope="session")
def sentiment_target(sentiment_model):
    from assay.targets import load_target

    return load_target(sentiment_model, device="cpu")
