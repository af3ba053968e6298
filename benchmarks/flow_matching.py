"""Flow-matching benchmark (Lab 7): the whole course's samplers on one axis, network calls (NFE).

Run alone (another torch process on the same cores slows both several-fold):
    .venv/bin/python benchmarks/flow_matching.py                 # 2 draws of N = 1000, about 12 min on 2 cores
    .venv/bin/python benchmarks/flow_matching.py --draws 4       # the other benchmarks' 4 draws, about 25 min
    .venv/bin/python benchmarks/flow_matching.py --n 200 --draws 1 --out /tmp/quick.json   # a quick look

For the diffusion model `unconditional` with DDIM, DPM-Solver++(2M) and UniPC, the distilled
students of Lab 6, the flow model `flow` with Euler and Heun, the reflowed `reflow` and its
one-step distillation `reflow_distilled` and `reflow_perceptual` (the same, trained further with a
perceptual loss) with Euler, at 1 to 50 network calls, it prints the
Frechet distance of N samples to the held-out sprites (the flow samplers on their default grid,
shifted towards the noise): the mean over `--draws` draws of N noises (seeds 2020, 2021, ...;
every sampler gets the same noises), its standard error, and the ratio to DDPM-500. DDPM-500's
own FD comes from the shipped samples of the first draw (data/ddpm500_samples.npz, made from seed 2020 by
benchmarks/distillation.py --save-reference), compared with every sampler's FD on that same draw:
sampling it afresh would take 6 minutes a draw. Then the straightness of the flow's and the
reflowed model's paths (shared.flow.straightness on 50 Euler steps), and the reflowed model's
one-step speed in sprites per second. It writes everything to `--out`
(benchmarks/results/flow_matching.json), which Lab 7 reads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.data import DATA_DIR, from_uint8  # noqa: E402
from shared.distillation import student_sampler  # noqa: E402
from shared.flow import straightness  # noqa: E402
from shared.metrics import SpriteMetrics  # noqa: E402
from shared.samplers import DDIMSampler, DPMSolverSampler, EulerSampler, HeunSampler, UniPCSampler, generate  # noqa: E402
from shared.weights import available_weights, load_model, manifest_entry  # noqa: E402

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "flow_matching.json"
REFERENCE_PATH = DATA_DIR / "ddpm500_samples.npz"
NOISE_SEED = 2020
# (label, model, sampler class, steps): Heun makes 2 steps - 1 network calls, the others one a step.
CONFIGURATIONS = (
    [("DDIM", "unconditional", DDIMSampler, steps) for steps in (5, 10, 20, 50)]
    + [("DPM-Solver++", "unconditional", DPMSolverSampler, steps) for steps in (5, 10, 20, 50)]
    + [("UniPC", "unconditional", UniPCSampler, steps) for steps in (5, 10, 20)]
    + [("flow Euler", "flow", EulerSampler, steps) for steps in (5, 10, 20, 50)]
    + [("flow Heun", "flow", HeunSampler, steps) for steps in (3, 5, 6, 10, 25)]
    + [("reflow Euler", "reflow", EulerSampler, steps) for steps in (1, 2, 4)]
    + [("reflow+distil Euler", "reflow_distilled", EulerSampler, steps) for steps in (1, 2)]
    + [("reflow+perceptual Euler", "reflow_perceptual", EulerSampler, steps) for steps in (1, 2)]
)
# FD at most this many times DDPM-500's; Heun's 10 calls: 9 or 11 (5 or 6 steps), the better counts.
TARGETS = {("flow Heun", 9): 1.2, ("flow Heun", 11): 1.2, ("reflow Euler", 1): 1.5, ("reflow+distil Euler", 1): 1.5,
           ("reflow+perceptual Euler", 1): 1.5}
ONE_STEP_RATE = 1000  # sprites per second, Lab 6's one-step students' target


@torch.inference_mode()
def sample(model, sampler, noise, n_steps, batch=250):
    return torch.cat([generate(model, sampler, noise[i : i + batch], n_steps, progress=False).images for i in range(0, len(noise), batch)])


def network_calls(model, sampler, n_steps) -> int:
    """Network calls per sprite of one sampling run, counted by generate."""
    return generate(model, sampler, torch.zeros(1, 3, 16, 16), n_steps, progress=False).network_calls


@torch.inference_mode()
def euler_velocities(model, noise, n_steps=50):
    """The velocities (n_steps, B, 3, 16, 16) of the Euler path from `noise`, for straightness."""
    sampler, x, velocities = EulerSampler(model.schedule, shift=1.0), noise, []  # straightness needs the even grid
    for t, t_prev in sampler.timesteps(n_steps):
        velocity = model(x, torch.full((len(x),), t))
        velocities.append(velocity)
        x, _ = sampler.step(velocity, t, t_prev, x)
    return torch.stack(velocities)


def sprites_per_second(model, sampler, n_steps, batch=250, repeats=7):
    noise = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sample(model, sampler, noise, n_steps)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample(model, sampler, noise, n_steps)
        seconds.append(time.perf_counter() - start)
    return batch / statistics.median(seconds)


def summarise(fds):
    error = statistics.stdev(fds) / len(fds) ** 0.5 if len(fds) > 1 else float("nan")
    return statistics.mean(fds), error


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per FD (default 1000)")
    parser.add_argument("--draws", type=int, default=2, help="draws of N noises; FDs are averaged over them (default 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="where to write the results (default: the file Lab 7 reads)")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="re-measure only these rows (e.g. 'flow Heun') and replace them in the existing --out file")
    args = parser.parse_args()
    if args.draws < 1 or not 2 <= args.n <= 1000:
        parser.error("--draws must be at least 1 and --n between 2 and 1000 (the shipped DDPM-500 draw has 1000 sprites)")
    torch.set_num_threads(args.threads)
    metrics = SpriteMetrics(load_model("classifier"))
    models = {name: load_model(name).requires_grad_(False) for name in ("unconditional", "flow", "reflow")}
    draws = [torch.randn(args.n, 3, 16, 16, generator=torch.Generator().manual_seed(NOISE_SEED + k)) for k in range(args.draws)]
    with np.load(REFERENCE_PATH) as reference:
        if int(reference["noise_seed"]) != NOISE_SEED:
            raise SystemExit(f"{REFERENCE_PATH} was made from seed {int(reference['noise_seed'])}, not {NOISE_SEED}")
        ddpm_fd = metrics.frechet(from_uint8(reference["images"][: args.n]))
    print(f"torch {torch.__version__}, {args.threads} threads; FD at N = {args.n} over {args.draws} draws; "
          f"DDPM-500 (first draw, shipped samples): {ddpm_fd:.3f}", flush=True)

    rows = [{"label": "DDPM", "model": "unconditional", "sampler": "ddpm", "nfe": 500, "fd": ddpm_fd, "error": None,
             "first_draw_fd": ddpm_fd, "fds": [ddpm_fd]}]
    runs = [(label, name, lambda m, c=cls: c(m.schedule), steps) for label, name, cls, steps in CONFIGURATIONS]
    students = [name for name in available_weights() if "sampling" in manifest_entry(name)]
    runs += [("knowledge" if name.startswith("knowledge") else "progressive", name,
              lambda m, entry=manifest_entry(name): student_sampler(entry, m.schedule), len(manifest_entry(name)["sampling"]["levels"]) - 1)
             for name in students]
    if args.only:
        runs = [run for run in runs if run[0] in args.only]
        if not runs or not args.out.exists():
            raise SystemExit(f"--only needs labels among {sorted({c[0] for c in CONFIGURATIONS})} and an existing {args.out}")
    for label, name, make_sampler, steps in runs:
        model = models.get(name) or load_model(name).requires_grad_(False)
        sampler = make_sampler(model)
        n_steps = None if "sampling" in manifest_entry(name) else steps
        nfe = network_calls(model, sampler, n_steps)
        fds = [metrics.frechet(sample(model, sampler, noise, n_steps)) for noise in draws]
        fd, error = summarise(fds)
        rows.append({"label": label, "model": name, "sampler": sampler.name, "nfe": nfe, "fd": fd, "error": error,
                     "first_draw_fd": fds[0], "fds": fds})
        print(f"  {label:23s} {name:18s} NFE {nfe:3d}: FD {fd:.3f} ± {error:.3f}  (first draw {fds[0]:.3f}, "
              f"{fds[0] / ddpm_fd:.2f}x DDPM-500's)", flush=True)

    if args.only:  # replace those rows in the earlier run's file, and say so in it
        results = json.loads(args.out.read_text())
        results["rows"] = [row for row in results["rows"] if row["label"] not in args.only] + rows[1:]
        results["rows"].sort(key=lambda row: (row["label"] != "DDPM", row["label"], row["nfe"]))
        results.setdefault("rows_remeasured", []).append({"labels": args.only, "command": " ".join(["python", *sys.argv])})
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"replaced the rows of {', '.join(args.only)} in {args.out}")
        return
    floor = statistics.mean(metrics.real_floor(args.n, seed=k) for k in range(args.draws))
    paths = {name: straightness(euler_velocities(models[name], draws[0][:250])) for name in ("flow", "reflow")}
    rate = sprites_per_second(models["reflow"], EulerSampler(models["reflow"].schedule), 1)
    results = {"n": args.n, "draws": args.draws, "noise_seed": NOISE_SEED, "threads": args.threads, "torch": torch.__version__,
               "floor": floor, "rows": rows,
               "straightness": {name: float(values.mean()) for name, values in paths.items()},
               "reflow_sprites_per_second": rate,
               "command": " ".join(["python", *sys.argv])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")

    print(f"\n{'':23s} {'model':18s} {'NFE':>4s} {'FD':>14s}  {'first draw / DDPM-500':>22s}  target")
    for row in rows:
        ratio = row["first_draw_fd"] / ddpm_fd
        need = TARGETS.get((row["label"], row["nfe"]))
        target = f"<= {need}x: {'met' if ratio <= need else 'NOT met'}" if need else ""
        error = f"± {row['error']:.3f}" if row["error"] is not None else " " * 7
        print(f"{row['label']:23s} {row['model']:18s} {row['nfe']:4d} {row['fd']:6.3f} {error}  {ratio:21.2f}x  {target}")
    print(f"real-vs-real floor at N = {args.n}: {floor:.3f}")
    print(f"straightness (0 = straight; 50 Euler steps, 250 paths): flow {results['straightness']['flow']:.4f}, "
          f"reflow {results['straightness']['reflow']:.4f}")
    print(f"reflow, one Euler step: {rate:.0f} sprites/s on {args.threads} threads "
          f"(target >= {ONE_STEP_RATE}: {'met' if rate >= ONE_STEP_RATE else 'NOT met'})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
