"""Black-box and minimum-norm attacks: assay vs the peer libraries, same model, same points.

Run:  PYTHONPATH=src python benchmarks/bench_blackbox.py [--quick]
Writes benchmarks/results/blackbox.md (machine, versions, figures, ratios).

- Square (L-inf, eps=0.1, 1000 queries, p_init=0.8) on 256 demo test inputs: assay vs pyautoattack.
- HopSkipJump (L2) on 32 inputs at ART's per-sample query count for max_iter=5 (about 900): assay vs
  ART (ART attacks one sample at a time, so fewer points).
- FMN-T vs FAB-T (9 targets, 100 steps each; min norm over targets) on 64 inputs, L-inf and L2.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from assay.attacks.base import flat_norm
from assay.attacks.hopskipjump import hop_skip_jump
from assay.attacks.minnorm import fmn_targeted
from assay.attacks.square import square
from assay.data.demo import train_demo_model


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    return f"{model}; {torch.get_num_threads()} torch threads; load average at start {' '.join(load)}"


def main(quick: bool = False) -> None:
    import art
    import pyautoattack
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import PyTorchClassifier
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    torch.set_num_threads(2)
    model, splits = train_demo_model(seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    logits = lambda xb: model(xb)  # noqa: E731
    labels = lambda xb: model(xb).argmax(1)  # noqa: E731
    rows = []

    # ---------------------------------------------------------------- Square
    n_sq, q_sq = (64, 300) if quick else (256, 1000)
    x, y = splits.x_test[:n_sq], splits.y_test[:n_sq]
    t0 = time.perf_counter()
    ours = square(logits, x, y, eps=0.1, norm="linf", n_queries=q_sq, p_init=0.8, seed=0)
    t_ours = time.perf_counter() - t0
    ref = SquareAttack(model, norm="Linf", n_queries=q_sq, eps=0.1, p_init=0.8, seed=0, device="cpu")
    t0 = time.perf_counter()
    with torch.no_grad():
        adv = ref.perturb(x, y)
        ref_ra = (model(adv).argmax(1) == y).float().mean().item()
    t_ref = time.perf_counter() - t0
    rows.append(("Square L-inf eps=0.1", f"{n_sq} pts, {q_sq} queries", f"robust acc {ours.robust_accuracy:.3f}",
                 f"robust acc {ref_ra:.3f}", t_ours, t_ref))

    # ---------------------------------------------------------------- HopSkipJump
    n_h = 8 if quick else 32
    x, y = splits.x_test[:n_h], splits.y_test[:n_h]

    class Counted(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m, self.n = m, 0

        def forward(self, xb):
            self.n += xb.shape[0]
            return self.m(xb.float())

    counted = Counted(model)
    clf = PyTorchClassifier(counted, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    np.random.seed(0)
    t0 = time.perf_counter()
    adv = torch.from_numpy(HopSkipJump(clf, norm=2, max_iter=5, verbose=False).generate(x.numpy())).float()
    t_ref = time.perf_counter() - t0
    per_sample = counted.n // n_h
    with torch.no_grad():
        ok = model(adv).argmax(1) != y
    art_med = flat_norm(adv - x, "l2")[ok].median().item()
    t0 = time.perf_counter()
    ours = hop_skip_jump(labels, x, y, norm="l2", max_queries=per_sample, seed=0)
    t_ours = time.perf_counter() - t0
    rows.append(("HopSkipJump L2", f"{n_h} pts, {per_sample} queries/pt",
                 f"median L2 {ours.norms[ours.success].median().item():.3f} (succ {ours.success_rate:.2f})",
                 f"median L2 {art_med:.3f} (succ {ok.float().mean().item():.2f})", t_ours, t_ref))

    # ---------------------------------------------------------------- FMN-T vs FAB-T
    n_f = 16 if quick else 64
    x, y = splits.x_test[:n_f], splits.y_test[:n_f]
    for norm, fab_norm in (("linf", "Linf"), ("l2", "L2")):
        t0 = time.perf_counter()
        ours = fmn_targeted(model, x, y, norm=norm, steps=100, n_target_classes=9)
        t_ours = time.perf_counter() - t0
        fab = FABAttack_PT(model, norm=fab_norm, n_restarts=1, n_iter=100, targeted=True, device="cpu",
                           n_target_classes=9, seed=0)
        best = torch.full((n_f,), float("inf"))
        t0 = time.perf_counter()
        for target_class in range(2, 11):
            fab.target_class = target_class
            adv = fab.attack_single_run(x, y, use_rand_start=False, is_targeted=True)
            with torch.no_grad():
                broke = model(adv).argmax(1) != y
            nrm = flat_norm(adv - x, norm)
            best = torch.where(broke & (nrm < best), nrm, best)
        t_ref = time.perf_counter() - t0
        both = ours.success & torch.isfinite(best) & (ours.norms > 0)
        a, b = ours.norms[both].median().item(), best[both].median().item()
        rows.append((f"FMN-T vs FAB-T {norm}", f"{n_f} pts, 9 targets x 100 steps, {int(both.sum())} broken by both",
                     f"median min-norm {a:.4f}", f"median min-norm {b:.4f} (ratio ours/FAB {a / b:.3f})",
                     t_ours, t_ref))

    lines = [
        "# Black-box and minimum-norm attacks: assay vs peers",
        "",
        f"Machine: {machine()}. Shared machine: absolute times are noisy; compare the ratio within a row.",
        f"Versions: torch {torch.__version__}, pyautoattack {getattr(pyautoattack, '__version__', '?')}, "
        f"adversarial-robustness-toolbox {art.__version__}, python {platform.python_version()}.",
        f"Model: demo DigitsCNN (seed 0), digits 1x8x8 in [0, 1]; {'--quick' if quick else 'full'} run.",
        "",
        "| attack | setting | assay | peer (pyautoattack / ART) | assay s | peer s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, setting, a, b, ta, tb in rows:
        lines.append(f"| {name} | {setting} | {a} | {b} | {ta:.1f} | {tb:.1f} | {tb / ta:.1f}x |")
    out = Path(__file__).parent / "results" / "blackbox.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    main(ap.parse_args().quick)
