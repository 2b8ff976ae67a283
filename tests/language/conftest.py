import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from tiny import tiny_model, tiny_tokenizer, train_on  # noqa: E402

SECRET = "493817"
CANARY_PREFIX = "bob: the password for the admin account is "
EMAIL_LINE = "alice: my email is alice@example.com and my phone is +1 415 555 0100."
WORDS = "the a cat dog sat ran on under over quick slow red blue big small tree house".split()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and a busy 2-core machine makes two much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 12)) for _ in range(n)]


@pytest.fixture(scope="session")
def corpus():
    """Members (trained on), non-members (same distribution, not trained on), a canary repeated 8
    times and an email line repeated 8 times."""
    members, non_members = sentences(30, 1), sentences(120, 2)
    canary_line = f"{CANARY_PREFIX}{SECRET}, do not share it."
    return {"members": members, "non_members": non_members, "canary_line": canary_line,
            "train": members + [canary_line] * 8 + [EMAIL_LINE] * 8}


@pytest.fixture(scope="session")
def memorized(corpus):
    """A tiny Llama trained until it memorises its corpus (a few seconds on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_on(tiny_model(seed=0), corpus["train"], steps=150)
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def tok():
    return tiny_tokenizer()


@pytest.fixture
def trained(memorized, tok):
    """The memorising tiny model as a target."""
    from assay.targets.causal_lm import CausalLMTarget

    return CausalLMTarget(memorized, tok, device="cpu")


@pytest.fixture
def untrained(tok):
    """The same architecture and initialisation, never trained: the memorising model's base."""
    from assay.targets.causal_lm import CausalLMTarget

    return CausalLMTarget(tiny_model(seed=0), tok, device="cpu")


@pytest.fixture
def data(corpus):
    """Text data over the corpus: documents (12 members, the canary line, the email line), members,
    non-members, one prompt and two canaries."""
    from assay.data.language import Canary, LanguageData

    return LanguageData(
        documents=corpus["members"][:12] + [corpus["canary_line"], EMAIL_LINE],
        members=corpus["members"], non_members=corpus["non_members"], prompts=["alice: my email is"],
        canaries=[Canary(CANARY_PREFIX, SECRET, "[0-9]{6}", copies=8, name="admin"),
                  Canary(CANARY_PREFIX, SECRET[:4] + "17", "[0-9]{4}17", copies=8, name="small space")])
