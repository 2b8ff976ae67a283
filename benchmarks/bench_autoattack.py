"""The AutoAttack ensemble: assay vs the reference pyautoattack (standard version) and torchattacks'
AutoAttack, on the same model and inputs, in one run.

    python benchmarks/bench_autoattack.py [--n 512] [--eps 0.0313725 0.1]

Model: the demo CNN (assay.data.demo.train_demo_model(0)); inputs: the first n held-out digits.
Writes benchmarks/results/autoattack.md. Each library's robust accuracy is re-checked on the model
from the adversarial inputs it returns, inside the eps ball and [0, 1].
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "autoattack.md"


def verified_robust_accuracy(model, x, y, x_adv, eps):
    ok = ((x_adv - x).abs().flatten(1).amax(1) <= eps + 1e-5) & (x_adv >= -1e-6).flatten(1).all(1) \
        & (x_adv <= 1 + 1e-6).flatten(1).all(1)
    with torch.no_grad():
        correct = model(x_adv).argmax(1) == y
    # an out-of-ball "adversarial" does not count as a break
    clean = model(x).argmax(1) == y
    return float(torch.where(ok, correct, clean).float().mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--eps", type=float, nargs="+", default=[8 / 255, 0.1])
    a = ap.parse_args()
    torch.set_num_threads(2)
    from assay.attacks.autoattack import autoattack
    from assay.data.demo import train_demo_model

    model, s = train_demo_model(0)
    model.eval()
    x, y = s.x_test[: a.n], s.y_test[: a.n]
    rows = []
    for eps in a.eps:
        t = time.perf_counter()
        res = autoattack(model, x, y, eps=eps, norm="linf", seed=0)
        t_assay = time.perf_counter() - t
        ra_assay = verified_robust_accuracy(model, x, y, res.x_adv, eps)

        from pyautoattack import AutoAttack

        aa = AutoAttack(model, eps=eps, norm="Linf", version="standard", seed=0, device="cpu")
        t = time.perf_counter()
        x_ref = aa.run_standard_evaluation(x, y, batch_size=512)
        t_ref = time.perf_counter() - t
        x_ref = x_ref[0] if isinstance(x_ref, tuple) else x_ref
        ra_ref = verified_robust_accuracy(model, x, y, x_ref, eps)

        import torchattacks

        ta = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
        t = time.perf_counter()
        x_ta = ta(x, y)
        t_ta = time.perf_counter() - t
        ra_ta = verified_robust_accuracy(model, x, y, x_ta, eps)
        rows.append((eps, ra_assay, t_assay, ra_ref, t_ref, ra_ta, t_ta, res.info["robust_after"]))
        print(rows[-1])

    import pyautoattack  # noqa: F401
    import torchattacks

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        "# AutoAttack ensemble: assay vs pyautoattack (reference, standard) vs torchattacks",
        "",
        f"Command: `python benchmarks/bench_autoattack.py --n {a.n} --eps {' '.join(f'{e:.6g}' for e in a.eps)}`",
        f"Machine: {cpu}, 2 torch threads; Python {platform.python_version()}, torch {torch.__version__}, "
        f"pyautoattack 0.2.0, torchattacks {torchattacks.__version__}.",
        f"Model: demo CNN (digits 1x8x8); {a.n} held-out inputs; L-inf. Robust accuracy re-verified on the model "
        "from each library's returned inputs (inside the ball and the bounds).",
        "",
        "| eps | assay robust acc | assay time (s) | pyautoattack robust acc | time (s) | torchattacks robust acc | time (s) | assay time / pyautoattack |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for eps, ra, ta_, rr, tr, rt, tt, _ in rows:
        lines.append(f"| {eps:.4g} | {ra:.4f} | {ta_:.1f} | {rr:.4f} | {tr:.1f} | {rt:.4f} | {tt:.1f} | {ta_ / tr:.2f}x |")
    lines += ["", "assay's robust accuracy after each stage:", ""]
    for eps, *_, after in rows:
        lines.append(f"- eps {eps:.4g}: " + ", ".join(f"{k} {v:.4f}" for k, v in after.items()))
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
