"""``assay train``: train a classifier, plainly or with differential privacy (DP-SGD, Opacus).

Writes ``model.safetensors`` (the architecture comes from ``--factory``, so it loads back with
``assay audit OUT/model.safetensors --factory ...``) and, with ``--dp``, ``dp.json`` holding the
(epsilon, delta) actually spent and every setting that determines it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from assay.errors import InputError

DEMO_FACTORY = "assay.data.demo:build_demo_model"


def add_train_commands(subparsers) -> None:
    """Register ``assay train`` on the main CLI's subparsers."""
    t = subparsers.add_parser("train", help="train a classifier (with --dp: differentially private, Opacus)",
                              description="Train a classifier; --dp trains with DP-SGD and reports the "
                              "(epsilon, delta) spent. Default data and model: the digits demo.")
    t.add_argument("--dp", action="store_true", help="differentially private training (DP-SGD via Opacus)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--epsilon", type=float, help="target epsilon: calibrate the noise to spend at most this")
    budget.add_argument("--noise-multiplier", type=float, help="noise std relative to --max-grad-norm")
    t.add_argument("--delta", type=float, help="delta of the guarantee (default min(1e-5, n^-1.1))")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="per-sample gradient clipping bound")
    t.add_argument("--accountant", default="rdp", choices=["rdp", "prv"])
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="(with --dp; plain training uses Adam)")
    t.add_argument("--epochs", type=int, help="default 10 with --dp, 30 without")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, help="default 0.5 for DP-SGD, 2e-3 for Adam")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data", help=".npz/.npy/.csv/.parquet/image folder with labels (default: the digits demo)")
    t.add_argument("--label", help="label column or key in --data")
    t.add_argument("--factory", help=f"MODULE:FN building the nn.Module (default with the demo: {DEMO_FACTORY})")
    t.add_argument("--out", default="assay-model", help="output directory")
    t.set_defaults(fn=cmd_train)


def _training_data(a):
    if a.data is None:
        from assay.data.demo import load_digits_splits

        s = load_digits_splits(a.seed)
        return s.x_train, s.y_train, "digits demo (1000 training images)"
    from assay.data.loaders import load_dataset

    if a.factory is None:
        raise InputError("--data needs --factory MODULE:FN that builds the model to train")
    ds = load_dataset(a.data, **({"label": a.label} if a.label else {}))
    if ds.y is None:
        raise InputError(f"{a.data} has no labels; training needs them (give --label)")
    return ds.x, ds.y, f"{a.data} ({len(ds)} records)"


def cmd_train(a) -> int:
    from safetensors.torch import save_file

    from assay.targets.loading import build_from_factory

    if not a.dp and (a.epsilon is not None or a.noise_multiplier is not None or a.delta is not None):
        raise InputError("--epsilon, --noise-multiplier and --delta need --dp")
    if a.dp and a.epsilon is None and a.noise_multiplier is None:
        raise InputError("--dp needs a privacy budget: --epsilon TARGET or --noise-multiplier SIGMA")
    if a.epochs is not None and a.epochs < 1:
        raise InputError(f"--epochs {a.epochs}; train for at least one epoch")
    x, y, described = _training_data(a)
    factory = a.factory or DEMO_FACTORY
    model = build_from_factory(factory)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.dp:
        from assay.train.dp import train_dp

        lr = a.lr if a.lr is not None else (0.5 if a.optimizer == "sgd" else 2e-3)
        res = train_dp(model, x, y, epsilon=a.epsilon, noise_multiplier=a.noise_multiplier, delta=a.delta,
                       max_grad_norm=a.max_grad_norm, epochs=a.epochs or 10, batch_size=a.batch_size, lr=lr,
                       optimizer=a.optimizer, seed=a.seed, accountant=a.accountant)
        trained = res.model
        info = {"factory": factory, "data": described, **res.settings()}
        (out / "dp.json").write_text(json.dumps(info, indent=2) + "\n")
        summary = (f"DP-trained on {described}: (epsilon={res.epsilon_spent:.3g}, delta={res.delta:.3g}) spent "
                   f"with noise_multiplier={res.noise_multiplier:.4g}, {res.steps} steps at sample rate "
                   f"{res.sample_rate:.4g} ({res.accountant.upper()} accountant) -> {out}")
    else:
        from assay.train.classifier import train_classifier

        if a.batch_size < 1:
            raise InputError("--batch-size must be >= 1")
        trained = train_classifier(model, x, y, epochs=a.epochs or 30, lr=a.lr or 2e-3,
                                   batch_size=a.batch_size, seed=a.seed)
        summary = f"trained on {described} (no privacy guarantee) -> {out}"
    save_file({k: v.detach().contiguous() for k, v in trained.state_dict().items()}, str(out / "model.safetensors"))
    print(summary)
    print(f"  audit it: assay audit {out / 'model.safetensors'} --factory {factory} --data ...", file=sys.stderr)
    return 0


