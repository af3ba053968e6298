"""Sampling command speed (issue 39): sprites per second and peak memory of `python -m tools.sample`.

Run alone (another torch process on the same cores slows both several-fold):
    .venv/bin/python benchmarks/sample_speed.py            # the one-step student at --n 1000, 4000, 16000

Each run is the command itself, in a fresh process, timed by the command's own clock (sampling
only, not start-up or writing files), with the process's peak resident memory. The baseline,
measured in the same run, is the command drawing all of --n as one batch (--chunk N), as it did
before it drew in chunks. Target: at least 1,500 sprites/s from the one-step student at any --n
on 2 cores, memory flat in --n.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATE = 1500
BASELINE_MAX_N = 4000  # the one-batch baseline above this would need gigabytes


def run(weights: str, n: int, chunk: int | None, threads: int) -> tuple[float, float]:
    """(sprites per second as the command reports it, peak resident memory in MB) of one run in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-c",
                   f"import torch, resource, sys; torch.set_num_threads({threads}); from tools.sample import main; code = main(sys.argv[1:]); "
                   "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)",
                   "--weights", weights, "--n", str(n), "--quiet", "--out", str(Path(folder) / "s.npz")]
        if chunk:
            command += ["--chunk", str(chunk)]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    rate = float(re.search(r"\((\d+) sprites/s\)", result.stdout).group(1))
    peak = float(re.search(r"peak_kb (\d+)", result.stdout).group(1)) / 1024
    return rate, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="knowledge_1step")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="runs per setting; the median rate is reported")
    args = parser.parse_args()
    print(f"python -m tools.sample --weights {args.weights}, {args.threads} threads, median of {args.repeats} runs, alternated")
    print(f"{'--n':>7s} {'one batch /s':>13s} {'peak MB':>8s} {'chunked /s':>11s} {'peak MB':>8s} {'ratio':>6s}  target")
    for n in args.n:
        # alternated run by run, so a slow spell of this shared machine weighs on both alike
        chunked_runs, whole_runs = [], []
        for _ in range(args.repeats):
            chunked_runs.append(run(args.weights, n, None, args.threads))
            if n <= BASELINE_MAX_N:
                whole_runs.append(run(args.weights, n, -(-n // 16) * 16, args.threads))
        chunked = sorted(chunked_runs)[args.repeats // 2]
        met = "met" if chunked[0] >= TARGET_RATE else "NOT met"
        if whole_runs:
            whole = sorted(whole_runs)[args.repeats // 2]
            baseline = f"{whole[0]:13.0f} {whole[1]:8.0f}"
            ratio = f"{chunked[0] / whole[0]:5.2f}x"
        else:  # one batch of this many would need gigabytes: the reason for chunks
            baseline, ratio = f"{'(not run)':>13s} {'':8s}", f"{'':6s}"
        print(f"{n:7d} {baseline} {chunked[0]:11.0f} {chunked[1]:8.0f} {ratio}  >= {TARGET_RATE}/s: {met}")


if __name__ == "__main__":
    main()
