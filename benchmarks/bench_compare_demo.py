"""Cost of `assay demo compare`: wall and CPU time of training the demo CNN with its three candidates,
auditing the four models and comparing three pairs, with the machine's load recorded beside them.

Usage: python benchmarks/bench_compare_demo.py [--out DIR] [--threads N]

Wall time on a shared machine says little; the CPU time (user + system of this process and its
children) bounds the wall time on dedicated cores: no more than the CPU time on one core, about half
of it on two when the work parallelises. No peer tool compares two models with paired statistics, so
there is no peer ratio to report.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time

import torch

import assay


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from assay.demos import run_compare_demo

    out = a.out or tempfile.mkdtemp(prefix="bench-compare-")
    load0 = os.getloadavg()
    t0, c0 = time.time(), cpu_seconds()
    results = run_compare_demo(out, log=lambda m: print(m, flush=True))
    wall, cpu = time.time() - t0, cpu_seconds() - c0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load0} -> "
          f"{os.getloadavg()}; python {platform.python_version()}, torch {torch.__version__}, assay {assay.__version__}, "
          f"{a.threads} torch threads")
    print(f"wall {wall:.0f} s, cpu {cpu:.0f} s")
    for name, c in results.items():
        audit = {f.probe: f.accounting.get("wall_time_s") for f in c.candidate.findings}
        print(f"fp32 vs {name}: {len(c.deltas)} metrics, {len(c.significant())} significant; audit seconds {audit}")


if __name__ == "__main__":
    main()
