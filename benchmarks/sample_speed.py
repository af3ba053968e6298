"""Sampling command speed (issue 39): sprites per second and peak memory of `python -m tools.sample`.

Run alone (another torch process on the same cores slows both several-fold):
    .venv/bin/python benchmarks/sample_speed.py            # the one-step student at --n 1000, 4000, 16000

Each run is the command itself, in a fresh process, timed by the command's own clock (sampling
only, not start-up or writing files), with the process's peak resident memory. The baseline,
measured in the same run, is the command drawing all of --n as one batch (--chunk N), as it did
before it drew in chunks. The ceiling, also measured in the same run, is the network alone: bare
forward passes on the same chunks in a fresh process, one call per sprite as the one-step student
makes, with the arithmetic that takes (FLOPs counted by torch) beside what the same process gets
from a large float32 matrix product at that moment: the machine's own ceiling, which moves with
the load on a shared machine. Inside the command, the share of its sampling time spent in the
network's forward passes says what is left to gain outside the network. Target: at least 1,500 sprites/s
from the one-step student at any --n on 2 cores, memory flat in --n.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATE = 1500
BASELINE_MAX_N = 4000  # the one-batch baseline above this would need gigabytes


COMMAND = """
import resource, sys, time, torch
import tools.sample
torch.set_num_threads(int(sys.argv[1]))
load_model, network_seconds = tools.sample.load_model, 0.0


def load_timed_model(name, device):  # the command's model, its forward passes timed
    model = load_model(name, device)
    forward = model.forward

    def timed_forward(*args, **kwargs):
        global network_seconds
        start = time.perf_counter()
        output = forward(*args, **kwargs)
        network_seconds += time.perf_counter() - start
        return output

    model.forward = timed_forward
    return model


tools.sample.load_model = load_timed_model
code = tools.sample.main(sys.argv[2:])
print("peak_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "network_seconds", network_seconds)
sys.exit(code)
"""


def run(weights: str, n: int, chunk: int | None, threads: int) -> tuple[float, float, float]:
    """(sprites per second as the command reports it, peak resident memory in MB, the share of its sampling time
    spent in the network's forward passes) of one run in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-c", COMMAND, str(threads),
                   "--weights", weights, "--n", str(n), "--quiet", "--out", str(Path(folder) / "s.npz")]
        if chunk:
            command += ["--chunk", str(chunk)]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    rate = float(re.search(r"\((\d+) sprites/s\)", result.stdout).group(1))
    peak = float(re.search(r"peak_kb (\d+)", result.stdout).group(1)) / 1024
    network_seconds = float(re.search(r"network_seconds (\S+)", result.stdout).group(1))
    return rate, peak, network_seconds * rate / n


NETWORK_ALONE = """
import sys, time, torch
from torch.utils.flop_counter import FlopCounterMode
from shared.weights import load_model
from tools.sample import CHUNK, keep_freed_memory
weights, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
keep_freed_memory()  # as the command does
model = load_model(weights)
generator = torch.Generator().manual_seed(0)
level = torch.full((CHUNK,), model.schedule.T, dtype=torch.long)  # the one-step student's only call
with torch.inference_mode():
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 16, 16), level[:1])
    start = time.perf_counter()
    for first in range(0, n, CHUNK):
        noise = torch.randn(min(CHUNK, n - first), 3, 16, 16, generator=generator)
        model(noise, level[: len(noise)])
    rate = n / (time.perf_counter() - start)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    matmul = 5 * 2 * 2048**3 / (time.perf_counter() - start)
print(rate, counter.get_total_flops(), matmul)
"""


def network_alone(weights: str, n: int, threads: int) -> tuple[float, float, float]:
    """(sprites per second, FLOPs per sprite) of bare forward passes, one per sprite, in chunks as the command makes
    them, and the FLOPs per second of a 2048 x 2048 matrix product right after."""
    result = subprocess.run([sys.executable, "-c", NETWORK_ALONE, weights, str(n), str(threads)],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    rate, flops, matmul = result.stdout.split()
    return float(rate), float(flops), float(matmul)


def processor_name() -> str:
    """The CPU's model name, so results from different kinds of machine are told apart (Linux; else platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="knowledge_1step")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="runs per setting; the median rate is reported")
    args = parser.parse_args()
    print(f"python -m tools.sample --weights {args.weights}, {args.threads} threads, median of {args.repeats} runs, alternated; "
          f"{processor_name()}, {os.cpu_count()} cores")
    print(f"{'--n':>7s} {'one batch /s':>13s} {'peak MB':>8s} {'chunked /s':>11s} {'peak MB':>8s} {'ratio':>6s} "
          f"{'network /s':>11s} {'GFLOP/s':>8s} {'matmul':>7s} {'in network':>10s}  target")
    flops_per_sprite = 0.0
    for n in args.n:
        # alternated run by run, so a slow spell of this shared machine weighs on both alike
        chunked_runs, whole_runs, network_runs = [], [], []
        for _ in range(args.repeats):
            chunked_runs.append(run(args.weights, n, None, args.threads))
            network_runs.append(network_alone(args.weights, n, args.threads))
            if n <= BASELINE_MAX_N:
                whole_runs.append(run(args.weights, n, -(-n // 16) * 16, args.threads))
        chunked = sorted(chunked_runs)[args.repeats // 2]
        network, flops_per_sprite, matmul = sorted(network_runs)[args.repeats // 2]
        ceiling = f"{network:11.0f} {network * flops_per_sprite / 1e9:8.0f} {matmul / 1e9:7.0f} {chunked[2]:10.1%}"
        met = "met" if chunked[0] >= TARGET_RATE else "NOT met"
        if whole_runs:
            whole = sorted(whole_runs)[args.repeats // 2]
            baseline = f"{whole[0]:13.0f} {whole[1]:8.0f}"
            ratio = f"{chunked[0] / whole[0]:5.2f}x"
        else:  # one batch of this many would need gigabytes: the reason for chunks
            baseline, ratio = f"{'(not run)':>13s} {'':8s}", f"{'':6s}"
        print(f"{n:7d} {baseline} {chunked[0]:11.0f} {chunked[1]:8.0f} {ratio} {ceiling}  >= {TARGET_RATE}/s: {met}")
    print(f"network: bare forward passes, one per sprite ({flops_per_sprite / 1e6:.0f} MFLOP each), and the GFLOP/s that makes; "
          f"matmul: GFLOP/s of a 2048 x 2048 float32 product in the same process; in network: the share of the command's sampling time in the network's forward passes; "
          f"{TARGET_RATE}/s takes {TARGET_RATE * flops_per_sprite / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
