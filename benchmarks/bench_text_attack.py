"""Greedy character-edit attack on a text classifier: assay's robustness.text engine vs TextAttack's
DeepWordBug recipe, on the same model and the same sentences.

Run (TextAttack 0.3.11 needs transformers < 5 through flair, so it runs in a side environment that
reuses the project's torch; see benchmarks/results/text_attack.md for the exact setup):

    PYTHONPATH=src /tmp/ta-venv/bin/python benchmarks/bench_text_attack.py [--quick]

Writes benchmarks/results/text_attack.md. Nothing reaches the network: HF_HUB_OFFLINE is set, the
model is the offline demo classifier (assay.data.demo_text), TextAttack's post-install download is
marked done in a private cache, and NLTK's stopword corpus is replaced by assay's list (written to a
private NLTK_DATA), which both attacks then use.

Both attacks: untargeted; words ranked by leave-one-out importance (TextAttack replaces the word by
"[UNK]", assay deletes it); one word edited per step, never twice, stopwords never; four character
edits per word (swap, substitute, delete, insert); summed edit distance <= 30; no cap on the number
of words. TextAttack's query counts exclude texts its cache answered; assay's count every text sent.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path

from bench_blackbox import machine  # the same machine line as the other results files

OUT = Path(__file__).parent / "results" / "text_attack.md"
SETUP = """
## How to read it

- Same model, same sentences, same constraints (see the script's docstring). The two differ in the
  leave-one-out ranking (TextAttack scores the text with the word replaced by `[UNK]`, assay with the
  word deleted) and in their random draws, so success rates within a few points are a tie.
- Queries: TextAttack counts model calls its cache did not answer, plus its clean call; assay counts
  every text it scored (its clean prediction comes from the audit's shared cache, so 1 is added here).
- Time: assay scores every sentence's candidates in one batch per step; TextAttack attacks one sentence
  at a time and pads every query to the tokenizer's `model_max_length` (64). The time ratio is mostly
  that batching, not a faster model.

## Environment (why a side environment)

TextAttack 0.3.11 imports flair at import time, and flair 0.15 imports transformers classes that
transformers 5 removed, so TextAttack cannot be imported next to the project's transformers 5. The run
uses a side virtualenv that sees the project's packages (torch 2.13 CPU included) through a `.pth`
file and shadows only what flair needs older (checked with `pip --dry-run` that nothing replaces torch):

```bash
python3.11 -m venv /tmp/ta-venv
echo /work/main/.venv/lib/python3.11/site-packages > /tmp/ta-venv/lib/python3.11/site-packages/main-venv.pth
/tmp/ta-venv/bin/pip install --no-deps "transformers==4.57.6" "huggingface_hub==0.36.2" "tokenizers==0.22.2" "datasets>=4,<5"
/tmp/ta-venv/bin/pip install sentencepiece ftfy lxml bioc gdown conllu transformer-smaller-training-vocab langdetect
# in the project venv: textattack and flair without their dependencies, then what `import textattack` needs
.venv/bin/pip install --no-deps textattack==0.3.11 flair==0.15.1 bert-score==0.3.13
.venv/bin/pip install nltk jieba editdistance lru-dict terminaltables more-itertools word2number num2words \\
    pinyin lemminflect language_tool_python OpenHowNet datasets Levenshtein boto3 deprecated segtok
PYTHONPATH=src /tmp/ta-venv/bin/python benchmarks/bench_text_attack.py
```

Nothing is downloaded at run time: `HF_HUB_OFFLINE=1`, TextAttack's post-install step (NLTK
downloads) is marked done in a private `TA_CACHE_DIR`, and its stopword constraint reads assay's
stopword list from a private `NLTK_DATA` (NLTK's own list would be a download), so both attacks skip
the same words.
"""


def offline_textattack(workdir: Path):
    """Import TextAttack with no network: a private cache where its post-install (NLTK downloads) is
    marked done, and an NLTK data dir whose English stopwords are assay's list."""
    from assay.attacks.text import STOPWORDS

    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["TA_CACHE_DIR"] = str(workdir / "ta-cache")
    (workdir / "ta-cache").mkdir(parents=True, exist_ok=True)
    (workdir / "ta-cache" / "post_install_check_3").touch()
    stop_dir = workdir / "nltk_data" / "corpora" / "stopwords"
    stop_dir.mkdir(parents=True, exist_ok=True)
    (stop_dir / "english").write_text("\n".join(sorted(STOPWORDS)) + "\n")
    os.environ["NLTK_DATA"] = str(workdir / "nltk_data")
    import textattack

    return textattack


def main(quick: bool = False) -> None:
    import numpy as np
    import torch
    import transformers

    from assay.attacks.text import greedy_text_attack
    from assay.data.demo_text import build_text_model, sentences
    from assay.targets import load_target

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-text-"))
    textattack = offline_textattack(work)
    from textattack import AttackArgs, Attacker
    from textattack.attack_recipes import DeepWordBugGao2018
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult
    from textattack.datasets import Dataset as TADataset
    from textattack.models.wrappers import HuggingFaceModelWrapper

    n = 40 if quick else 200
    texts_train, labels_train = sentences(600, 0)
    model_dir = build_text_model(work / "model", texts_train, labels_train)
    texts, labels = sentences(n, 7)
    y = torch.tensor(labels)

    # ---------------------------------------------------------------- assay
    target = load_target(model_dir, device="cpu")
    t0 = time.perf_counter()
    clean = target.scores(texts)
    res = greedy_text_attack(target.scores, texts, y, edits="char", max_queries=100_000, max_edit_distance=30,
                             max_words=None, candidates_per_word=4, clean_scores=clean, seed=0)
    t_assay = time.perf_counter() - t0
    attacked = ~res.clean_wrong
    a_succ = float(res.success[attacked].float().mean())
    a_q = float(res.queries[attacked].float().mean()) + 1  # + the clean query, counted as TextAttack does
    a_q_succ = float(res.queries[attacked & res.success].float().mean()) + 1
    a_words = float(res.words_changed[attacked & res.success].float().mean())

    # ----------------------------------------------------------- TextAttack
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    attack = DeepWordBugGao2018.build(HuggingFaceModelWrapper(hf_model, hf_tok))
    args = AttackArgs(num_examples=n, disable_stdout=True, silent=True, random_seed=0, query_budget=None)
    t0 = time.perf_counter()
    results = Attacker(attack, TADataset(list(zip(texts, labels))), args).attack_dataset()
    t_ta = time.perf_counter() - t0
    done = [r for r in results if not isinstance(r, SkippedAttackResult)]
    won = [r for r in done if isinstance(r, SuccessfulAttackResult)]
    ta_succ = len(won) / max(len(done), 1)
    ta_q = float(np.mean([r.num_queries for r in done]))
    ta_q_succ = float(np.mean([r.num_queries for r in won])) if won else float("nan")
    ta_words = float(np.mean([len(r.original_result.attacked_text.all_words_diff(r.perturbed_result.attacked_text))
                              for r in won])) if won else float("nan")
    assert len(done) == int(attacked.sum()) and all(isinstance(r, (SuccessfulAttackResult, FailedAttackResult)) for r in done)
    # both must agree on which sentences the model gets right: the same model, the same inputs
    ta_skipped = {i for i, r in enumerate(results) if isinstance(r, SkippedAttackResult)}
    assert ta_skipped == set(res.clean_wrong.nonzero().flatten().tolist())

    # the adversarial texts really fool the model (re-scored by a fresh target)
    fresh = load_target(model_dir, device="cpu")
    adv = [res.texts_adv[i] for i in (attacked & res.success).nonzero().flatten().tolist()]
    verified = float((fresh.scores(adv).argmax(1) != y[attacked & res.success]).float().mean()) if adv else float("nan")
    examples = [(texts[i], res.texts_adv[i]) for i in (attacked & res.success).nonzero().flatten()[:3].tolist()]
    ta_examples = [(r.original_result.attacked_text.text, r.perturbed_result.attacked_text.text) for r in won[:3]]

    import tokenizers

    lines = [
        "# Greedy character-edit text attack: assay vs TextAttack's DeepWordBug",
        "",
        f"Machine: {machine()}. Shared machine: absolute times are noisy; compare the ratio within a row.",
        f"Versions: torch {torch.__version__}, transformers {transformers.__version__}, tokenizers "
        f"{tokenizers.__version__}, textattack {getattr(textattack, '__version__', '0.3.11')}, "
        f"python {platform.python_version()}.",
        f"Model: assay.data.demo_text's one-layer BERT (hidden 32, word-level WordPiece), trained on 600 synthetic "
        f"reviews (seed 0); {n} test sentences (seed 7), {int(attacked.sum())} classified correctly and attacked "
        f"by both{'; quick run' if quick else ''}.",
        "",
        "| | assay `greedy_text_attack(edits=\"char\")` | TextAttack `DeepWordBugGao2018` | assay / TextAttack |",
        "|---|---|---|---|",
        f"| attack success rate | {a_succ:.3f} | {ta_succ:.3f} | {a_succ / ta_succ:.2f} |",
        f"| queries per attacked sentence (mean) | {a_q:.1f} | {ta_q:.1f} | {a_q / ta_q:.2f} |",
        f"| queries per successful attack (mean) | {a_q_succ:.1f} | {ta_q_succ:.1f} | {a_q_succ / ta_q_succ:.2f} |",
        f"| words changed per success (mean) | {a_words:.2f} | {ta_words:.2f} | |",
        f"| wall time, all sentences (s) | {t_assay:.1f} | {t_ta:.1f} | {t_assay / t_ta:.2f} |",
        "",
        f"Every assay success re-scored by a freshly loaded target: {verified:.0%} misclassified.",
        "",
        "Examples (assay): " + "; ".join(f"`{a}` -> `{b}`" for a, b in examples),
        "",
        "Examples (TextAttack): " + "; ".join(f"`{a}` -> `{b}`" for a, b in ta_examples),
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + SETUP)
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    main(ap.parse_args().quick)
