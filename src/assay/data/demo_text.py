"""A synthetic sentiment task and tiny BERT text classifiers built offline, in seconds.

Used by the tests and the text-attack benchmark (and handy for trying text audits): nothing is
downloaded. :func:`sentences` writes short reviews from fixed word lists (two sentiment words of the
label's class and one of the other, among fillers; optionally in a second dialect or with a made-up
film title per review); :func:`build_text_model` trains a one-layer BERT with a word-level WordPiece
tokenizer on them and saves both with ``save_pretrained``, so the directory loads like any Hugging
Face classifier (``assay audit DIR --data reviews.csv --text-column review``). Needs ``assay[hf]``.
"""

from __future__ import annotations

import numpy as np
import torch


def _transformers():
    from assay.targets.huggingface import _transformers as load  # offline settings, one-line error if missing

    return load()


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
    class and one of the other (at random places, or all at the end with ``sentiment_at="end"``);
    with ``titles``, each review first names its own film (a distinct rare word; at most 400 reviews).

    Example
    -------
    >>> texts, labels = sentences(2, seed=0)
    >>> len(texts), sorted(set(labels)) <= [0, 1]
    (2, True)
    """
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


def tokenizer(words=None):
    """A fast WordPiece tokenizer over whole words (default :data:`VOCAB`) plus single characters: a
    misspelt word falls apart into letters, which carry no sentiment the model has learnt."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    transformers = _transformers()
    words = VOCAB if words is None else words
    chars = [chr(c) for c in range(33, 127)]
    vocab = SPECIAL + sorted(set(words)) + chars + ["##" + c for c in chars]
    tok = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                                model_max_length=64)  # = max_position_embeddings


# every sentiment word of both dialects, the fillers and titles: one tokenizer vocabulary for every model
VOCAB = POS + NEG + POS_B + NEG_B + FILL + TITLES


def build_text_model(out_dir, texts, labels, *, epochs=5, seed=0, hidden=32, layers=1, lr=5e-3, batch_size=64,
                     names=("negative", "positive")):
    """Train a tiny BERT sequence classifier (Adam, no dropout) on ``(texts, labels)`` and save it with
    its tokenizer to ``out_dir``; returns ``out_dir``. Five epochs on 600 :func:`sentences` give an
    accurate, undefended model; many epochs on few, mislabelled titled reviews, one that memorises.

    Example
    -------
    >>> texts, labels = sentences(600, seed=0)
    >>> build_text_model("tiny-sentiment", texts, labels)       # doctest: +SKIP
    """
    torch.manual_seed(seed)
    transformers = _transformers()
    tok = tokenizer()
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
