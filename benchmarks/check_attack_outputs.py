"""Bit-for-bit regression check of the evasion attacks across a refactor.

    PYTHONPATH=src python benchmarks/check_attack_outputs.py save /tmp/attacks-before.pt
    # ... change the code ...
    PYTHONPATH=src python benchmarks/check_attack_outputs.py compare /tmp/attacks-before.pt

``save`` trains the demo CNN once, stores its weights and the inputs in the file together with the
outputs of every evasion attack (fgsm, pgd, apgd, apgd_targeted, fmn, fmn_targeted, square,
hop_skip_jump, autoattack, transfer_attack) for L-inf and L2 with fixed seeds, including the
argument variants that take other code paths (targeted, restarts, schedules, losses, batch sizes,
randomized models with EOT, bf16, query budgets, 10/3/2-class and flat inputs for AutoAttack, its
checkpoint keys) and the error messages for norm names. ``compare`` loads the same weights and
inputs, reruns everything and compares with ``torch.equal`` (exact, not allclose); it exits 1 on
any difference. Speed is not measured here (see bench_pgd.py).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

N = 24  # points per attack: enough for broken, unbroken and already-wrong points


class FirstClasses(nn.Module):
    """The demo CNN restricted to its first ``k`` logits: a trained k-class model (digits 0..k-1)."""

    def __init__(self, net: nn.Module, k: int, flat: bool = False):
        super().__init__()
        self.net, self.k, self.flat = net, k, flat

    def forward(self, x):
        return self.net(x.reshape(-1, 1, 8, 8) if self.flat else x)[:, : self.k]


class Noisy(nn.Module):
    """A randomized model (Gaussian input noise from torch's global generator)."""

    def __init__(self, net: nn.Module, sigma: float = 0.05):
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x):
        return self.net(x + self.sigma * torch.randn_like(x))


def _setup(state: dict | None):
    from assay.data.demo import build_demo_model

    if state is None:
        from assay.data.demo import train_demo_model

        net, s = train_demo_model(0)
        x, y = s.x_test[:200].clone(), s.y_test[:200].clone()
        state = {"weights": {k: v.clone() for k, v in net.state_dict().items()}, "x": x, "y": y}
    net = build_demo_model(10)
    net.load_state_dict(state["weights"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, state


def _cases(net: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor):
    """name -> zero-argument callable returning an AttackResult (or raising)."""
    from assay.attacks.apgd import apgd, apgd_targeted
    from assay.attacks.autoattack import autoattack
    from assay.attacks.extraction import transfer_attack
    from assay.attacks.gradient import fgsm, pgd
    from assay.attacks.hopskipjump import hop_skip_jump
    from assay.attacks.minnorm import fmn, fmn_targeted
    from assay.attacks.square import square

    x, y = x_all[:N], y_all[:N].clone()
    y[3] = (y[3] + 1) % 10  # one point the model already gets wrong
    with torch.no_grad():
        ranked = net(x).argsort(1, descending=True)
    second = torch.where(ranked[:, 1] == y, ranked[:, 0], ranked[:, 1])  # the closest class other than y
    noisy = Noisy(net)

    def labels(z):
        with torch.no_grad():
            return net(z).argmax(1)

    def scores(z):
        with torch.no_grad():
            return net(z)

    def probs(z):
        with torch.no_grad():
            return net(z).softmax(1)

    eps = {"linf": 0.1, "l2": 1.0}
    small = {"linf": 0.03, "l2": 0.3}  # most points survive: unbroken paths and best-loss tracking
    cases = {}
    for norm in ("linf", "l2"):
        e, s = eps[norm], small[norm]
        cases.update({
            f"fgsm-{norm}": lambda n=norm, e=e: fgsm(net, x, y, eps=e, norm=n),
            f"fgsm-targeted-{norm}": lambda n=norm, e=e: fgsm(net, x, y, eps=e, norm=n, targeted=True, y_target=second),
            f"pgd-{norm}": lambda n=norm, e=e: pgd(net, x, y, eps=e, norm=n, steps=10),
            f"pgd-small-{norm}": lambda n=norm, s=s: pgd(net, x, y, eps=s, norm=n, steps=10, restarts=2),
            f"pgd-variants-{norm}": lambda n=norm, e=e: pgd(
                net, x, y, eps=e / 2, norm=n, steps=8, restarts=2, schedule="cosine", loss="dlr", batch_size=7, seed=3),
            f"pgd-step-nostart-{norm}": lambda n=norm, e=e: pgd(
                net, x, y, eps=e, norm=n, steps=6, schedule="step", random_start=False, step_size=e / 3),
            f"pgd-targeted-{norm}": lambda n=norm, e=e: pgd(
                net, x, y, eps=e, norm=n, steps=10, targeted=True, y_target=second),
            f"pgd-bf16-{norm}": lambda n=norm, e=e: pgd(net, x, y, eps=e, norm=n, steps=10, precision="bf16"),
            f"pgd-eot-{norm}": lambda n=norm, e=e: pgd(noisy, x, y, eps=e, norm=n, steps=5, eot_samples=3),
            f"apgd-ce-{norm}": lambda n=norm, e=e: apgd(net, x, y, eps=e, norm=n, steps=15),
            f"apgd-small-{norm}": lambda n=norm, s=s: apgd(
                net, x, y, eps=s, norm=n, steps=15, restarts=2, batch_size=5),
            f"apgd-dlr-{norm}": lambda n=norm, s=s: apgd(net, x, y, eps=s, norm=n, loss="dlr", steps=15, seed=1),
            f"apgd-margin-eot-{norm}": lambda n=norm, e=e: apgd(
                noisy, x, y, eps=e, norm=n, loss="margin", steps=6, eot_samples=2),
            f"apgd-t-{norm}": lambda n=norm, s=s: apgd_targeted(net, x, y, eps=s, norm=n, steps=10, n_target_classes=3),
            f"apgd-t-ce-{norm}": lambda n=norm, s=s: apgd_targeted(
                net, x, y, eps=s, norm=n, steps=10, n_target_classes=2, loss="ce", restarts=2),
            f"fmn-{norm}": lambda n=norm: fmn(net, x, y, norm=n, steps=20),
            f"fmn-batched-{norm}": lambda n=norm: fmn(net, x, y, norm=n, steps=12, batch_size=5, alpha_init=2.0),
            f"fmn-targeted-{norm}": lambda n=norm: fmn(net, x, y, norm=n, steps=12, targeted=True, y_target=second),
            f"fmn_targeted-{norm}": lambda n=norm: fmn_targeted(net, x, y, norm=n, steps=12, n_target_classes=3),
            f"square-{norm}": lambda n=norm, e=e: square(scores, x, y, eps=e, norm=n, n_queries=150),
            f"square-probs-budget-{norm}": lambda n=norm, e=e: square(
                probs, x, y, eps=e, norm=n, n_queries=150, query_budget=900, seed=5),
            f"square-targeted-{norm}": lambda n=norm, e=e: square(
                scores, x, y, eps=e, norm=n, n_queries=120, targeted=True, y_target=second),
            f"hsj-{norm}": lambda n=norm: hop_skip_jump(labels, x, y, norm=n, max_queries=300, init_evals=20),
            f"hsj-eps-budget-{norm}": lambda n=norm, e=e: hop_skip_jump(
                labels, x, y, norm=n, max_queries=300, init_evals=20, eps=e * 2, query_budget=4000, seed=2),
            f"hsj-targeted-{norm}": lambda n=norm: hop_skip_jump(
                labels, x, y, norm=n, max_queries=250, init_evals=15, targeted=True, y_target=second,
                x_init=x_all[100:][_first_of(y_all[100:], second)]),
            f"transfer-{norm}": lambda n=norm, e=e: transfer_attack(net, labels, x, y, eps=e, norm=n, steps=5),
        })
        aa = dict(steps=8, square_queries=60, n_target_classes=3, norm=norm)
        for k, flat in ((10, False), (3, False), (2, False), (10, True)):
            sel = (y_all < k).nonzero().flatten()[:N]
            model = net if (k == 10 and not flat) else FirstClasses(net, k, flat)
            xs = x_all[sel].reshape(len(sel), -1) if flat else x_all[sel]
            name = f"autoattack-{k}cls{'-flat' if flat else ''}-{norm}"
            cases[name] = lambda m=model, xs=xs, ys=y_all[sel], e=e, aa=aa: _aa(autoattack, m, xs, ys, eps=e, **aa)
        cases[f"autoattack-rand-{norm}"] = lambda n=norm, e=e: _aa(
            autoattack, noisy, x[:10], y[:10], eps=e, version="rand", steps=4, norm=n)
        cases[f"autoattack-subset-{norm}"] = lambda n=norm, s=s: _aa(
            autoattack, net, x, y, eps=s, attacks=("apgd-dlr", "fmn-t", "apgd-t"), steps=6, norm=n,
            n_target_classes=2)
    # the public boundary: accepted aliases and the errors for unsupported norms
    for alias in ("Linf", "L-inf", "inf", "li", "L_2", "2", "l1", "1", "l3"):
        for attack, fn in (("pgd", lambda a: pgd(net, x[:4], y[:4], eps=0.1, norm=a, steps=2)),
                           ("fmn", lambda a: fmn(net, x[:4], y[:4], norm=a, steps=2)),
                           ("square", lambda a: square(scores, x[:4], y[:4], eps=0.1, norm=a, n_queries=5)),
                           ("hsj", lambda a: hop_skip_jump(labels, x[:4], y[:4], norm=a, max_queries=20)),
                           ("apgd", lambda a: apgd(net, x[:4], y[:4], eps=0.1, norm=a, steps=2)),
                           ("autoattack", lambda a: autoattack(net, x[:4], y[:4], eps=0.1, norm=a, steps=2,
                                                               square_queries=5, n_target_classes=1))):
            cases[f"alias-{attack}-{alias}"] = lambda fn=fn, a=alias: fn(a)
    return cases


def _first_of(y: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """For each goal class, the index of the first point labelled with it (a real input of that class)."""
    return torch.stack([(y == g).nonzero()[0, 0] for g in goal])


def _aa(autoattack, model, x, y, **kw):
    keys = []

    def unit(key, fn):
        keys.append(key)
        return fn()

    res = autoattack(model, x, y, unit=unit, **kw)
    res.info["unit_keys"] = keys
    return res


def _snapshot(fn) -> dict:
    torch.manual_seed(1234)  # the randomized model draws from the global generator
    try:
        r = fn()
    except Exception as e:  # noqa: BLE001 - the error itself is part of the behaviour compared
        return {"error": f"{type(e).__name__}: {e}"}
    out = {}
    for k, v in vars(r).items():
        out[k] = v
    return out


def _diff(a, b, path: str) -> list[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [f"{path}: tensor vs {type(b).__name__}"]
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            extra = ""
            if a.shape == b.shape and a.is_floating_point() and b.is_floating_point():
                extra = f", max |diff| {(a.double() - b.double()).abs().nan_to_num().max().item():.3g}"
            return [f"{path}: tensors differ ({a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}{extra})"]
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}: key {k!r} only on one side" for k in set(a) ^ set(b)]
        for k in a.keys() & b.keys():
            out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} vs {len(b)}"]
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in _diff(u, v, f"{path}[{i}]")]
    if type(a) is not type(b) or a != b:
        if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
            return []  # both NaN
        return [f"{path}: {a!r} vs {b!r}"]
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("save", "compare"))
    ap.add_argument("path")
    ap.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = ap.parse_args()
    torch.set_num_threads(2)
    ref = torch.load(args.path, weights_only=False) if args.mode == "compare" else None
    net, state = _setup(None if ref is None else ref["state"])
    results = {}
    for name, fn in _cases(net, state["x"], state["y"]).items():
        if args.only in name:
            results[name] = _snapshot(fn)
    if args.mode == "save":
        torch.save({"state": state, "results": results}, args.path)
        errors = sum("error" in r for r in results.values())
        print(f"saved {len(results)} cases ({errors} of them errors, by design) to {args.path}")
        return 0
    problems = []
    for name, got in results.items():
        if name not in ref["results"]:
            problems.append(f"{name}: not in the reference")
            continue
        problems += _diff(ref["results"][name], got, name)
    for p in problems:
        print("DIFF", p)
    print(f"compared {len(results)} cases: {'all identical' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
