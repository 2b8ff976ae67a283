"""The ``assay`` command line. Every user error ends with one line on stderr and a non-zero exit:
2 bad input, 3 query budget exhausted, 1 the policy failed (report still written)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from assay.errors import AssayError, InputError
from assay.version import __version__

EXIT_POLICY_FAILED = 1
EXIT_INPUT = 2
EXIT_INTERNAL = 4  # a bug in assay (the CLI still prints one line)


def _floats(s: str, what: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, got {s!r}") from None


def _parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--param robustness.evasion.eps_linf=0.1,0.2`` -> {"robustness.evasion": {"eps_linf": "0.1,0.2"}}."""
    out: dict[str, dict[str, Any]] = {}
    for it in items or []:
        if "=" not in it or "." not in it.split("=", 1)[0]:
            raise InputError(f"--param {it!r} must look like PROBE.KEY=VALUE, e.g. robustness.evasion.eps_linf=0.1")
        lhs, value = it.split("=", 1)
        probe, key = lhs.rsplit(".", 1)
        out.setdefault(probe, {})[key] = value
    return out


def _add_target_options(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--factory", help="MODULE:CALLABLE that builds the architecture for safetensors/state-dict weights")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow loading pickle-based model files (they can run arbitrary code)")
    g.add_argument("--input-shape", help="per-sample input shape, e.g. 3,32,32 (default: from the data)")
    g.add_argument("--num-classes", type=int)
    g.add_argument("--bounds", help="valid input value range LOW,HIGH (default: 0,1 for neural networks, "
                   "unbounded for scikit-learn models)")
    g.add_argument("--mean", help="per-channel normalization mean applied inside the model, e.g. 0.49,0.48,0.45")
    g.add_argument("--std", help="per-channel normalization std")
    g.add_argument("--query-budget", type=int, help="hard limit on queries to the model, retries included; "
                   "split across probes by their needs (see --budget-split)")
    g.add_argument("--budget-split", action="append", metavar="PROBE=QUERIES",
                   help="fix a probe's share of --query-budget (repeatable); the rest is shared by need")
    g.add_argument("--token-budget", type=int, help="language models: hard limit on prompt plus generated tokens")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument("--http", action="append", metavar="KEY=VALUE",
                   help="URL targets: timeout, retries, backoff, output_path, output (logits|probs|labels), "
                        "input_key, encoding, batch, batch_size, cache, headers / request_template (JSON)")
    g.add_argument("--llm", action="append", metavar="KEY=VALUE",
                   help="language models (.gguf, causal-LM directory, http(s)://.../v1): model, api (chat|completions), "
                        "api_key_env, echo_logprobs, concurrency, timeout, retries, template_overhead, system_prompt, "
                        "max_batch_size, max_batch_tokens, headers (JSON)")
    d = p.add_argument_group("data")
    d.add_argument("--data", required=data_required, help=".npz/.npy, .csv/.parquet/.jsonl, an image folder, or .jsonl texts "
                   "for language models (docs/language.md)")
    d.add_argument("--text-column", help="text classifiers: the column holding the text (CSV/Parquet/JSONL; "
                   "JSON Lines default to 'text'); see docs/text.md")
    d.add_argument("--label", help="label column (CSV/Parquet/JSONL)")
    d.add_argument("--features", help="comma-separated feature columns (CSV/Parquet)")
    d.add_argument("--sensitive", help="comma-separated sensitive-attribute columns (fairness)")
    d.add_argument("--member", help="membership column: 1 if the row was in the training set (privacy)")
    d.add_argument("--ood", help="an out-of-distribution data file (reliability); for text, another text file "
                   "(.txt: one text per line)")
    d.add_argument("--population", help="a labelled data file of records NOT used in training, from the same "
                   "distribution (privacy: the membership attacks' population)")
    d.add_argument("--image-size", help="resize image-folder images to H,W (one number: a square)")


def _target_kwargs(a) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if a.bounds:
        kw["bounds"] = tuple(_floats(a.bounds, "--bounds"))
        if len(kw["bounds"]) != 2:
            raise InputError("--bounds must be LOW,HIGH")
        if not kw["bounds"][0] < kw["bounds"][1]:
            raise InputError(f"--bounds {a.bounds}: LOW must be below HIGH (e.g. 0,1 or -inf,inf)")
    if a.input_shape:
        shape = _floats(a.input_shape, "--input-shape")
        if not shape or any(v != int(v) or v < 1 for v in shape):
            raise InputError(f"--input-shape {a.input_shape} must be positive whole numbers, e.g. 3,32,32")
        kw["input_shape"] = tuple(int(v) for v in shape)
    for name in ("num_classes", "query_budget", "token_budget", "factory"):
        if getattr(a, name) is not None:
            kw[name] = getattr(a, name)
    if a.num_classes is not None and a.num_classes < 2:
        raise InputError(f"--num-classes {a.num_classes}: a classifier has at least 2 classes")
    if a.query_budget is not None and a.query_budget < 0:
        raise InputError(f"--query-budget {a.query_budget} is negative; give a number of queries >= 0")
    if a.mean or a.std:
        if not (a.mean and a.std):
            raise InputError("give both --mean and --std, or neither")
        kw["mean"], kw["std"] = _floats(a.mean, "--mean"), _floats(a.std, "--std")
    if a.trust_pickle:
        kw["trust_pickle"] = True
    if a.device != "auto":
        from assay.targets.torch import pick_device

        pick_device(a.device)  # checked here too: non-torch targets would otherwise ignore a bad --device
        kw["device"] = a.device
    if a.http:
        if not a.model.startswith(("http://", "https://")):
            raise InputError("--http options apply to a URL target only; drop them or audit a URL")
        kw["http_options"] = _http_options(a.http)
    if a.llm:
        kw["llm_options"] = _kv_options(a.llm, llm_option_types(), "--llm")
    return kw


# HttpTarget arguments that have CLI options of their own (or come from the data) are not --http keys.
HTTP_OWN_OPTIONS = ("self", "url", "input_shape", "num_classes", "seed", "query_budget", "bounds", "name")


def _signature_types(fns, own: tuple[str, ...]) -> dict[str, type]:
    """Keyword names and value types of ``fns`` (``dict[str, str] | None`` -> dict), less ``own``."""
    import inspect
    import typing

    out: dict[str, type] = {}
    for fn in fns:
        hints = typing.get_type_hints(fn)
        for name in inspect.signature(fn).parameters:
            if name not in own and name in hints and name not in out:
                kinds = [t for t in typing.get_args(hints[name]) if t is not type(None)] or [hints[name]]
                out[name] = typing.get_origin(kinds[0]) or kinds[0]
    return out


def http_option_types() -> dict[str, type]:
    """The ``--http`` keys and their value types, read from HttpTarget's signature so the two cannot
    drift apart: ``{"timeout": float, ..., "headers": dict}``."""
    from assay.targets.http import HttpTarget

    return _signature_types([HttpTarget.__init__], HTTP_OWN_OPTIONS)


# Language-model target arguments set by their own CLI options (or not settable from the CLI).
LLM_OWN_OPTIONS = ("self", "url", "tokenizer", "device", "query_budget", "token_budget", "seed", "name",
                   "source", "cache_dir")


def llm_option_types() -> dict[str, type]:
    """The ``--llm`` keys and their types, read from the two language-model targets' signatures."""
    from assay.targets.causal_lm import CausalLMTarget
    from assay.targets.chat_api import ChatTarget

    types = _signature_types([ChatTarget.__init__, CausalLMTarget.__init__], LLM_OWN_OPTIONS)
    return {k: v for k, v in types.items() if isinstance(v, type) and v.__module__ == "builtins"}


def _http_options(items: list[str]) -> dict[str, Any]:
    """``--http timeout=30 --http 'headers={"Authorization": "Bearer T"}'`` -> HttpTarget keyword arguments."""
    return _kv_options(items, http_option_types(), "--http")


def _kv_options(items: list[str], types: dict[str, type], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> keyword arguments of the declared types (JSON objects for dicts)."""
    import json

    out: dict[str, Any] = {}
    for it in items:
        key, sep, raw = it.partition("=")
        key = key.strip()
        kind = types.get(key)
        if not sep or kind is None:
            raise InputError(f"{flag} {it!r} must be KEY=VALUE with KEY one of {', '.join(types)}")
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                value: Any = raw.lower() in ("true", "1")
            elif kind is dict:
                value = json.loads(raw)
                if not isinstance(value, dict):
                    raise ValueError
            else:
                value = kind(raw)
        except ValueError:
            raise InputError(f"{flag} {key}={raw!r} is not a valid {kind.__name__}"
                             + (" (a JSON object)" if kind is dict else "")) from None
        out[key] = value
    return out


def _load_data(a):
    from assay.data.loaders import load_dataset
    from assay.targets.loading import is_language_model

    if is_language_model(a.model):  # prompts, documents and canaries for the language probes
        from assay.data.language import load_language_data

        return load_language_data(a.data)

    opts: dict[str, Any] = {}
    if a.label:
        opts["label"] = a.label
    if a.features:
        opts["features"] = a.features.split(",")
    if a.sensitive:
        opts["sensitive"] = a.sensitive.split(",")
    if a.member:
        opts["member"] = a.member
    if a.ood:
        opts["ood"] = a.ood
    if a.population:
        opts["population"] = a.population
    if a.text_column:
        opts["text"] = a.text_column
    if a.image_size:
        size = tuple(int(v) for v in _floats(a.image_size, "--image-size"))
        opts["image_size"] = size[0] if len(size) == 1 else size  # one number: a square
    return load_dataset(a.data, **opts)


def _budget_split(items: list[str] | None) -> dict[str, int]:
    """``--budget-split robustness.blackbox=3000`` (repeatable, or comma-separated) -> {probe: queries}."""
    out: dict[str, int] = {}
    for it in items or []:
        for part in filter(None, (p.strip() for p in it.split(","))):
            name, sep, value = part.partition("=")
            try:
                n = int(value)
            except ValueError:
                n = -1
            if not sep or n < 0:
                raise InputError(f"--budget-split {part!r} must be PROBE=QUERIES with a whole number >= 0, "
                                 "e.g. robustness.blackbox=3000")
            out[name.strip()] = n
    return out


def _write_and_summarise(report, out: Path, quiet: bool = False) -> int:
    from assay.report import render_all, summary_table

    paths = render_all(report, out)
    if not quiet:
        print(summary_table(report))
        print("\n" + "  ".join(f"{k}: {v}" for k, v in paths.items()))
    verdicts = {f.verdict for f in report.findings}
    gate = report.policy.get("gate") or {"passed": True, "unmet": []}
    if report.findings and verdicts == {"skipped"}:
        print("assay: error: every probe was skipped, so nothing was checked; see each probe's reason above "
              "(e.g. give labels, --sensitive or --member, or choose probes this model supports)", file=sys.stderr)
        return EXIT_INPUT
    if "error" in verdicts:
        return EXIT_INPUT
    if not gate["passed"]:
        for u in gate["unmet"]:
            print(f"assay: policy: {u['probe']}: {u['why']}", file=sys.stderr)
        return EXIT_POLICY_FAILED
    if "fail" in verdicts:
        return EXIT_POLICY_FAILED
    return 0


def cmd_audit(a) -> int:
    from assay.data.dataset import align_text_labels
    from assay.engine.api import as_target
    from assay.engine.plan import load_policy, load_suite, plan_from_names
    from assay.engine.runner import Runner

    if a.quiet:  # read when transformers / huggingface_hub are first imported, i.e. later
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    data = _load_data(a)
    if not a.quiet:
        for w in getattr(data, "warnings", ()):
            print(f"assay: warning: {w}", file=sys.stderr)
    kw = _target_kwargs(a)
    from assay.targets.chat_api import looks_like_openai_url

    if a.model.startswith(("http://", "https://")) and not looks_like_openai_url(a.model) and "num_classes" not in kw:
        raise InputError("auditing a URL needs --num-classes (and --input-shape if the data does not imply it)")
    target = as_target(a.model, data, **kw)
    data = align_text_labels(data, target)
    params = _parse_params(a.param)
    if a.probe:
        plan = plan_from_names(a.probe, params)
    else:
        from assay.engine.plan import apply_params

        plan = apply_params(load_suite(_default_suite(a.suite, target)), params)
    out = Path(a.out)
    runner = Runner(target, data, plan, out_dir=out, seed=a.seed, policy=load_policy(a.policy),
                    policy_source=a.policy, executor=a.executor, resume=not a.no_resume,
                    progress=not a.quiet, budget_split=_budget_split(a.budget_split),
                    log=None if a.quiet else (lambda m: print(m, file=sys.stderr)), debug=a.debug)
    report = runner.run()
    return _write_and_summarise(report, out, a.quiet)


def _default_suite(suite: str | None, model) -> str:
    """The suite asked for, else the one for the model's kind: language for a generative language
    model (the standard suite's probes are for classifiers), standard for the rest."""
    if suite:
        return suite
    from assay.targets.loading import is_language_model

    return "language" if is_language_model(model) else "standard"


def cmd_compare(a) -> int:
    from assay.compare import Settings, compare_reports
    from assay.engine.plan import load_policy

    names = tuple(n.strip() for n in a.names.split(",")) if a.names else ("baseline", "candidate")
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise InputError(f"--names {a.names!r} must be two different names, e.g. fp32,int8")
    if a.reports:
        if a.models:
            raise InputError("give either BASELINE CANDIDATE models or --reports A.json B.json, not both")
        from assay.report import read_json

        reports = [read_json(Path(r)) for r in a.reports]
        comparison = compare_reports(*reports, policy=load_policy(a.policy, comparison=True) if a.policy else None,
                                     settings=Settings(level=a.level, alpha=a.alpha, power=a.power,
                                                       n_boot=a.n_boot, seed=a.seed))
        comparison.names = names
        paths = comparison.write_all(Path(a.out))
    else:
        if len(a.models or []) != 2:
            raise InputError("give two models, BASELINE CANDIDATE (or --reports A.json B.json)")
        if not a.data:
            raise InputError("--data is required to compare two models (it is not needed with --reports)")
        from assay.compare import compare

        a.model = a.models[0]
        data = _load_data(a)
        comparison = compare(
            a.models[0], a.models[1], data, suite=_default_suite(a.suite, a.models[0]), probes=a.probe, params=_parse_params(a.param),
            policy=a.policy, out=a.out, seed=a.seed, executor=a.executor, names=names, resume=not a.no_resume,
            level=a.level, alpha=a.alpha, power=a.power, n_boot=a.n_boot,
            log=None if a.quiet else (lambda m: print(m, file=sys.stderr)), **_target_kwargs(a))
        paths = {k: Path(a.out) / f for k, f in (("json", "comparison.json"), ("html", "comparison.html"),
                                                  ("junit", "junit.xml"))}
    return _comparison_exit(comparison, paths, a.quiet)


def _comparison_exit(comparison, paths, quiet: bool) -> int:
    if not quiet:
        print(comparison.summary())
        print("\n" + "  ".join(f"{k}: {v}" for k, v in paths.items()))
    if comparison.verdict == "error":
        for problem in comparison.gate.get("problems", []):
            print(f"assay: error: {problem}", file=sys.stderr)
        return EXIT_INPUT
    if not comparison.gate.get("passed", True):
        for f in comparison.gate.get("failures", []) + comparison.gate.get("problems", []):
            print(f"assay: compare: {f}", file=sys.stderr)
        return EXIT_POLICY_FAILED
    return 0


def cmd_demo(a) -> int:
    if a.which == "llm":
        return cmd_demo_llm(a)
    if a.which == "compare":
        return cmd_demo_compare(a)
    from assay.data.demo import write_demo

    out = Path(a.out)
    print(f"Training the demo CNN on scikit-learn's digits (seed {a.seed}) ...", file=sys.stderr)
    model_path, data_path = write_demo(out, seed=a.seed)
    print(f"  model: {model_path}\n  data:  {data_path}", file=sys.stderr)
    argv = [
        "audit", str(model_path), "--factory", "assay.data.demo:build_demo_model",
        "--data", str(data_path), "--suite", a.suite, "--out", str(out), "--seed", str(a.seed),
    ]
    # The digits have 17 grey levels (steps of 1/16): budgets of a few /255 are below one level, so
    # the demo measures robustness at 0.05-0.2, where the curve actually moves.
    if a.suite in ("quick", "standard", "full"):
        eps = "0.1" if a.suite == "quick" else "0.05,0.1,0.2"
        argv += ["--param", f"robustness.evasion.eps_linf={eps}", "--param", f"robustness.blackbox.eps_linf={eps}"]
        if a.suite != "quick":
            argv += ["--param", "privacy.extraction.eps_linf=0.15",
                     "--param", "robustness.evasion.max_samples=200"]
    if a.quiet:
        argv.append("--quiet")
    if a.no_resume:
        argv.append("--no-resume")
    if a.policy:
        argv += ["--policy", a.policy]
    code = main(argv)
    # The demo model is deliberately undefended, so it fails robustness policies: that is the
    # demonstration, not an error. Only a policy the user passed turns failures into an exit code.
    return code if (code != EXIT_POLICY_FAILED or a.policy) else 0


def cmd_demo_compare(a) -> int:
    from assay.demos import run_compare_demo

    out = Path(a.out)
    print("Training the demo CNN and three candidates: dynamic int8, 50% pruned, fine-tuned on low-contrast digits ...",
          file=sys.stderr)
    results = run_compare_demo(out, seed=a.seed, log=lambda m: print(m, file=sys.stderr))
    code = 0
    for name, comparison in results.items():
        if not a.quiet:
            print(f"\n== fp32 vs {name} ==")
            print(comparison.summary())
            print(f"report: {out / f'fp32-vs-{name}' / 'comparison.html'}")
        code = max(code, _comparison_exit(comparison, {}, quiet=True))
    return code


def cmd_demo_llm(a) -> int:
    """Fine-tune SmolLM2 on planted secrets and audit it and its base model (assay.data.demo_llm)."""
    from assay.demos import run_llm_demo

    if a.policy:
        raise InputError("assay demo llm takes no --policy; audit its model with assay audit to apply one")
    out = Path(a.out if a.out != "assay-demo" else "assay-demo-llm")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    log = (lambda m: None) if a.quiet else (lambda m: print(m, file=sys.stderr))
    result = run_llm_demo(out, seed=a.seed, log=log)
    if a.quiet:
        print((out / "summary.txt").read_text(encoding="utf-8").rstrip())
    del result
    return 0


def cmd_probes(a) -> int:
    from assay.probes.base import all_probes

    rows = []
    for name, cls in all_probes().items():
        if a.axis and cls.axis != a.axis:
            continue
        if cls.requires:
            req = "+".join(sorted(cls.requires))
        elif cls.requires_any:
            req = " | ".join("+".join(sorted(r)) for r in cls.requires_any)
        else:
            req = "-"
        cost = cls().cost(None, None)
        q = cost.get("queries")
        rows.append((name, cls.axis, req, ",".join(sorted(cls.needs)) or "-",
                     f"{q:,}" if isinstance(q, int) else str(q), cls.description))
    if not rows:
        raise InputError(f"no probes on axis {a.axis!r}; axes: robustness, privacy, integrity, fairness, reliability, "
                         "explain, certify, language")
    head = ("probe", "axis", "target needs", "data needs", "queries (default params)")
    widths = [max(len(r[i]) for r in rows + [head + ("",)]) for i in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  description")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    return 0


def cmd_report(a) -> int:
    from assay.report import read_json, summary_table, write_html, write_junit

    report = read_json(Path(a.report))
    out = Path(a.out) if a.out else Path(a.report).parent
    if a.html:
        p = out / "report.html"
        write_html(report, p)
        print(p)
    if a.junit:
        p = out / "junit.xml"
        write_junit(report, p)
        print(p)
    if not (a.html or a.junit):
        print(summary_table(report))
    return 0


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage mistakes end like every other user error: one line, exit code 2 (subcommands inherit this)."""

    def error(self, message: str):
        print(f"assay: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="assay", description="Audit the trustworthiness of ML models; run ML-security CTFs.")
    p.add_argument("--version", action="version", version=f"assay {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train the demo CNN and audit it end to end (or: assay demo llm)")
    d.add_argument("which", nargs="?", default="cnn", choices=["cnn", "llm", "compare"],
                   help="cnn (default): the digits CNN; llm: fine-tune SmolLM2 on planted secrets and audit what "
                        "leaks; compare: the CNN beside its int8, pruned and fine-tuned copies (assay compare)")
    d.add_argument("--out", default="assay-demo")
    d.add_argument("--suite", default="standard")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--policy")
    d.add_argument("--quiet", action="store_true")
    d.add_argument("--no-resume", action="store_true")
    d.set_defaults(fn=cmd_demo)

    au = sub.add_parser("audit", help="audit a model file, directory or URL")
    au.add_argument("model", help="model file (.pt TorchScript, .safetensors + --factory, .onnx, .skops), HF directory, or URL")
    _add_target_options(au)
    au.add_argument("--suite", default=None, help="quick, standard, full, language, or a suite .toml (default: "
                    "language for a generative language model, standard for the rest)")
    au.add_argument("--probe", action="append", help="probe name or axis (repeatable); overrides --suite")
    au.add_argument("--param", action="append", help="PROBE.KEY=VALUE probe parameter (repeatable)")
    au.add_argument("--out", default="assay-report")
    au.add_argument("--policy", help="policy .toml of metric thresholds (sets the exit code)")
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--executor", default="local", help="local, process or ray")
    au.add_argument("--no-resume", action="store_true", help="ignore checkpoints from an earlier run")
    au.add_argument("--quiet", action="store_true")
    au.add_argument("--debug", action="store_true", help="show tracebacks")
    au.set_defaults(fn=cmd_audit)

    cp = sub.add_parser("compare", help="compare two models (or two finished audits) with paired statistics")
    cp.add_argument("models", nargs="*", metavar="MODEL", help="BASELINE CANDIDATE: two model files, directories or URLs")
    cp.add_argument("--reports", nargs=2, metavar=("A.json", "B.json"),
                    help="compare two finished audits instead (refused when their inputs differ)")
    _add_target_options(cp, data_required=False)
    cp.add_argument("--suite", default=None, help="quick, standard, full, language, or a suite .toml (default: "
                    "language for generative language models, standard for the rest)")
    cp.add_argument("--probe", action="append", help="probe name or axis (repeatable); overrides --suite")
    cp.add_argument("--param", action="append", help="PROBE.KEY=VALUE probe parameter (repeatable)")
    cp.add_argument("--out", default="assay-compare")
    cp.add_argument("--policy", help="delta policy .toml: rules on candidate minus baseline (sets the exit code); "
                    "default: no metric may be significantly worse")
    cp.add_argument("--names", help="the two models' names in the report, e.g. fp32,int8")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--level", type=float, default=0.95, help="confidence level of the difference intervals")
    cp.add_argument("--alpha", type=float, default=0.05, help="false-discovery rate over all compared metrics")
    cp.add_argument("--power", type=float, default=0.8, help="power at which the minimum detectable effect is reported")
    cp.add_argument("--n-boot", type=int, default=2000, help="paired bootstrap resamples")
    cp.add_argument("--executor", default="local", help="local, process or ray")
    cp.add_argument("--no-resume", action="store_true", help="ignore checkpoints from an earlier run")
    cp.add_argument("--quiet", action="store_true")
    cp.add_argument("--debug", action="store_true", help="show tracebacks")
    cp.set_defaults(fn=cmd_compare)

    pr = sub.add_parser("probes", help="list the probes with their requirements and cost")
    pr.add_argument("--axis")
    pr.set_defaults(fn=cmd_probes)

    rp = sub.add_parser("report", help="re-render a report.json")
    rp.add_argument("report")
    rp.add_argument("--html", action="store_true")
    rp.add_argument("--junit", action="store_true")
    rp.add_argument("--out")
    rp.set_defaults(fn=cmd_report)

    for hook in ("assay.arena.cli:add_arena_commands", "assay.train_cli:add_train_commands"):
        mod, fn = hook.split(":")
        try:
            module = __import__(mod, fromlist=[fn])
        except ImportError as e:
            if e.name and (e.name == mod or mod.startswith(e.name + ".")):
                continue  # that part of assay is not installed in this build
            raise
        getattr(module, fn)(sub)
    return p


# options whose values may start with "-" (a negative bound, "-inf"): argparse would read those as
# options, so "--bounds -inf,inf" becomes "--bounds=-inf,inf" before parsing
_SIGNED_VALUE_OPTIONS = ("--bounds", "--mean", "--std")


def _join_signed_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _SIGNED_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_signed_values(list(sys.argv[1:] if argv is None else argv)))
    debug = getattr(args, "debug", False) or os.environ.get("ASSAY_DEBUG") == "1"
    try:
        return int(args.fn(args) or 0)
    except AssayError as e:
        if debug:
            raise
        print(f"assay: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("assay: interrupted; rerun the same command to resume from the checkpoint", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        if debug:
            raise
        print(f"assay: error: {e.strerror}: {e.filename}; check the path", file=sys.stderr)
        return EXIT_INPUT
    except Exception as e:  # a bug in assay: still one line, and the way to the traceback
        if debug:
            raise
        print(f"assay: error: internal error ({type(e).__name__}: {e}); this is a bug in assay: rerun with "
              "ASSAY_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
