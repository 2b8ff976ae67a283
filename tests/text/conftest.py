"""Tiny Hugging Face text classifiers built offline (assay.data.demo_text) and text files to audit."""

import json

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from assay.data.demo_text import NEG, NEG_B, POS, POS_B, build_text_model, sentences  # noqa: E402,F401


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
    return build_text_model(tmp_path_factory.mktemp("sentiment"), texts, labels)


@pytest.fixture(scope="session")
def sentiment_target(sentiment_model):
    from assay.targets import load_target

    return load_target(sentiment_model, device="cpu")
