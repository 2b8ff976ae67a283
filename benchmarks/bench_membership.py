"""Membership inference: assay's baseline / LiRA / RMIA against ART's MembershipInferenceBlackBox,
on the same targets, in one run.

Targets
- tabular: a 2-layer MLP trained long on 2000 of 4000 make_classification records (4 classes,
  30% label noise), the other 2000 are non-members;
- demo: the demo CNN (assay.data.demo, 1000 members of the 1797 digits).

Protocol. The pool is split at random (stratified by membership) into an attack-training half A
and an evaluation half E. ART's attack trains its classifier on A's members and non-members (it is
given that ground truth; assay's attacks are not) and every attack is scored on E. Reference
models for LiRA / RMIA train on balanced halves of the whole pool (the attacker's population).
With R = 1 the single model is treated as OUT for every record (half of them it did train on), the
only way to score all records offline. Reference models come in complementary pairs, so the runs with 1, 2, 4 models use the first models
of the 8-model run; the wall time of an R-model attack is R times the mean training time of one
reference model plus its scoring time.

Also times the whole ``privacy.membership`` probe on the demo (4 reference models, reference
training included, a 2-worker process pool).

Run: PYTHONPATH=src python benchmarks/bench_membership.py  (writes benchmarks/results/membership.md)
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

torch.set_num_threads(2)

from assay.attacks.privacy import auc, lira_scores, logit_confidence, loss_scores, rmia_scores, tpr_at_fpr  # noqa: E402
from assay.attacks.privacy.reference import TorchRecipe, predict_log_probs, train_reference_models  # noqa: E402
from assay.data.dataset import Dataset  # noqa: E402
from assay.data.demo import train_classifier, train_demo_model  # noqa: E402
from assay.engine.context import ProbeContext  # noqa: E402
from assay.parallel import ProcessPoolExecutorAdapter  # noqa: E402
from assay.probes.privacy.membership import MembershipProbe  # noqa: E402
from assay.targets.torch import TorchTarget  # noqa: E402

R_LIST = (1, 2, 4, 8)
OUT = Path(__file__).parent / "results" / "membership.md"


def tabular_mlp(n_features: int = 20, n_classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, n_classes))


def tabular_task(seed: int = 0):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=4000, n_features=20, n_informative=10, n_classes=4, flip_y=0.3,
                               random_state=seed)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    member = torch.zeros(len(x), dtype=torch.bool)
    member[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:2000]] = True
    settings = {"epochs": 40, "lr": 5e-3, "batch_size": 64}
    torch.manual_seed(seed)
    model = train_classifier(tabular_mlp(), x[member], y[member], seed=seed, **settings)
    return x, y, member, model, TorchRecipe(tabular_mlp(), **settings), (20,)


def demo_task(seed: int = 0):
    model, sp = train_demo_model(seed)
    x, y = torch.cat([sp.x_train, sp.x_test]), torch.cat([sp.y_train, sp.y_test])
    member = torch.zeros(len(x), dtype=torch.bool)
    member[: len(sp.x_train)] = True
    return x, y, member, model, TorchRecipe(model, epochs=30, lr=2e-3, batch_size=64), (1, 8, 8)


def art_blackbox(model, input_shape, n_classes, x, y, member, train_idx, eval_idx, kind="nn"):
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model.eval(), loss=nn.CrossEntropyLoss(), input_shape=input_shape,
                            nb_classes=n_classes, clip_values=(0.0, 1.0))
    xa, ya, ma = x[train_idx].numpy(), y[train_idx].numpy(), member[train_idx].numpy()
    t0 = time.perf_counter()
    attack = MembershipInferenceBlackBox(clf, attack_model_type=kind)
    attack.fit(xa[ma], ya[ma], xa[~ma], ya[~ma])
    s = attack.infer(x[eval_idx].numpy(), y[eval_idx].numpy(), probabilities=True)
    s = np.asarray(s).reshape(len(eval_idx), -1)[:, -1]  # probability of "member"
    return s, time.perf_counter() - t0


def row(name, s, m, seconds, fprs):
    cells = [name, f"{auc(s, m):.3f}"]
    for f in fprs:
        t = tpr_at_fpr(s, m, f)
        cells.append(f"{t.value:.3f} [{t.low:.3f}, {t.high:.3f}]" if t.estimable else "n/e")
    t0 = tpr_at_fpr(s, m, 0.0)
    cells += [f"{t0.value:.3f}", f"{seconds:.1f}"]
    return cells, {"auc": auc(s, m), **{f: tpr_at_fpr(s, m, f).value for f in fprs}}


def sweep(label, x, y, member, model, recipe, input_shape, workdir, lines, fprs):
    n_classes = int(y.max()) + 1
    g = torch.Generator().manual_seed(1)
    half = torch.zeros(len(x), dtype=torch.bool)
    for cls in (True, False):
        idx = (member == cls).nonzero().flatten()
        half[idx[torch.randperm(len(idx), generator=g)[: len(idx) // 2]]] = True
    eval_idx, train_idx = half.nonzero().flatten(), (~half).nonzero().flatten()
    m_eval = member[eval_idx].numpy()
    t0 = time.perf_counter()
    lp_t = predict_log_probs(model, x, n_classes)
    t_scores = time.perf_counter() - t0
    refs = train_reference_models(recipe, x, y, n_models=max(R_LIST), seed=0, num_classes=n_classes,
                                  executor=ProcessPoolExecutorAdapter(2), cache_dir=workdir / f"refs-{label}")
    per_model = refs.seconds / max(refs.trained, 1)
    results = {}
    table = []
    c, results["baseline"] = row("baseline (loss)", loss_scores(lp_t, y, "log_probs").numpy()[eval_idx], m_eval, t_scores, fprs)
    table.append(c)
    phi_t = logit_confidence(lp_t, y, "log_probs")
    phi_r = logit_confidence(refs.log_probs[:, 0], y, "log_probs")
    p_t = lp_t.exp()[torch.arange(len(y)), y].double()
    p_r = refs.log_probs[:, 0].exp()[:, torch.arange(len(y)), y].double()
    for r in R_LIST:
        # one model leaves half the records without an OUT model: treat it as OUT for all (approximate)
        mask = refs.in_mask[:r] if r >= 2 else None
        t1 = time.perf_counter()
        variant = "online" if r >= 2 else "offline"
        s = lira_scores(phi_t, phi_r[:r], mask, variant=variant, fixed_variance=True).numpy()
        c, results[f"lira{r}"] = row(f"LiRA {variant}, R={r}", s[eval_idx], m_eval, r * per_model + time.perf_counter() - t1, fprs)
        table.append(c)
        t1 = time.perf_counter()
        s = rmia_scores(p_t, p_r[:r], p_t, p_r[:r], ref_in_mask=mask, ref_in_mask_z=mask, variant=variant).numpy()
        c, results[f"rmia{r}"] = row(f"RMIA {variant}, R={r}", s[eval_idx], m_eval, r * per_model + time.perf_counter() - t1, fprs)
        table.append(c)
    for kind in ("nn", "rf"):
        s, secs = art_blackbox(model, input_shape, n_classes, x, y, member, train_idx, eval_idx, kind)
        c, results[f"art_{kind}"] = row(f"ART MembershipInferenceBlackBox ({kind})", s, m_eval, secs, fprs)
        table.append(c)
    acc = lambda sel: (lp_t.argmax(1)[sel] == y[sel]).float().mean().item()  # noqa: E731
    lines.append(f"\n## {label}\n")
    lines.append(f"Target accuracy: train {acc(member):.3f}, test {acc(~member):.3f}. Evaluation half: "
                 f"{int(m_eval.sum())} members, {int((~m_eval).sum())} non-members. One reference model trains in "
                 f"{per_model:.1f} s on average (2-worker process pool).\n")
    head = ["attack", "AUC"] + [f"TPR@{f:g} FPR [95% CI]" for f in fprs] + ["TPR@0 FPR", "wall s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    lines += ["| " + " | ".join(c) + " |" for c in table]
    return results


def main():
    lines = ["# Membership inference benchmark", ""]
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model_name = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    except OSError:
        model_name = platform.processor()
    import art
    import sklearn

    lines.append(f"Machine: {model_name}, {os.cpu_count()} cores (torch threads 2); load average at start "
                 f"{os.getloadavg()[0]:.1f} (shared machine: timings are inflated by other jobs). "
                 f"Python {sys.version.split()[0]}, torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
                 f"ART {art.__version__}, numpy {np.__version__}.")
    lines.append("`n/e` = not estimable (fewer than 1/FPR non-members). Intervals: Clopper-Pearson on the TPR.")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        x, y, member, model, recipe, shape = tabular_task()
        tab = sweep("Tabular MLP (make_classification, 4000 records)", x, y, member, model, recipe, shape, workdir,
                    lines, (0.01, 0.001))
        x, y, member, model, recipe, shape = demo_task()
        sweep("Demo CNN (digits, 1797 records)", x, y, member, model, recipe, shape, workdir, lines, (0.01, 0.001))
        # the whole probe on the demo, reference training included, fresh cache
        target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu")
        data = Dataset(x, y, member=member)
        t0 = time.perf_counter()
        f = MembershipProbe(n_reference=4).run(ProbeContext(target, data, executor=ProcessPoolExecutorAdapter(2),
                                                            workdir=workdir / "probe"))
        probe_s = time.perf_counter() - t0
    ratio = tab["rmia2"][0.001] / max(tab["art_nn"][0.001], tab["art_rf"][0.001], 1e-12)
    best_art = max(tab["art_nn"][0.001], tab["art_rf"][0.001])
    lines.append("\n## Summary\n")
    lines.append(f"- Tabular, TPR at 0.1% FPR: RMIA with 2 reference models {tab['rmia2'][0.001]:.3f} vs the better "
                 f"ART black-box attack {best_art:.3f}: ratio "
                 f"{'inf (ART finds no member at 0.1% FPR)' if best_art == 0 else f'{ratio:.1f}x'} (target >= 3x).")
    lines.append(f"- Whole `privacy.membership` probe on the demo (baseline + LiRA + RMIA, 4 reference models trained "
                 f"on a 2-worker process pool): {probe_s:.0f} s; verdict {f.verdict}; {f.summary}.")
    lines.append(f"- Benchmark wall time: {time.perf_counter() - t_all:.0f} s.")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
