"""Fast sampling benchmark (Lab 4): DDIM, DPM-Solver++(2M) and UniPC against 500-step DDPM, same model, same noise.

Run alone (another torch process on the same cores slows both several-fold):
    .venv/bin/python benchmarks/fast_sampling.py              # both models, 4 draws of N = 1000, about 2 h on 2 cores
    .venv/bin/python benchmarks/fast_sampling.py --draws 1 --n 300 --models unconditional   # a quicker look
    .venv/bin/python benchmarks/fast_sampling.py --save-reference   # only rewrite data/ddpm500_context_samples.npz (Lab 4)

For each sampler it prints:
  time     seconds to sample `--batch` sprites (median of `--repeats` runs), and the
           speed-up over DDPM-500 measured in this same run;
  FD       Frechet distance of N samples to the held-out sprites (the course's
           classifier): the mean over `--draws` draws of N noises (seeds 2020, 2021, ...; the
           same noises for every sampler) with its standard error and each draw's FD, the ratio
           of the mean to DDPM-500's, and the real-vs-real floor at N. At N = 1000 one draw's
           FD moves by about 0.1 (15%) from one draw of noise to the next, more than the
           targets' margins, so a single draw cannot decide them;
  ODE error  for the deterministic samplers at 20 steps: RMS distance of the
           sprites to deterministic DDIM over all 500 steps from the same noise
           (the solution they all approximate), none of them clipping x0_hat,
           because clipping changes the ODE; with the median per-sprite distance,
           which a few sprites near a fork in the ODE's flow cannot dominate, and
           the RMS ratio on four subsets of the sprites, which shows how much they move it;
           then how far DPM-Solver++ through the same 500 levels lands from that reference:
           at a fork even 500 first-order steps are not converged;
  profile  how fast x0_hat moves per unit of lambda along that ODE, the measurement
           behind the banded grid (shared/samplers.py, BAND).
DDIM also runs at eta = 0.3 (a little fresh noise per step, Song et al. eq. 12).
The targets of issue 5 are printed beside the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.foundation import model_names, trained_with_context  # noqa: E402
from shared.data import DATA_DIR, GROUPS, context_vector, to_uint8  # noqa: E402
from shared.metrics import SpriteMetrics  # noqa: E402
from shared.samplers import DDIMSampler, DPMSolverSampler, UniPCSampler, generate, half_log_snr  # noqa: E402
from shared.schedule import NoiseSchedule  # noqa: E402
from shared.weights import load_model  # noqa: E402

CONFIGURATIONS = [("ddpm", 500), ("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim-eta0.3", 25),
                  ("dpmsolver", 5), ("dpmsolver", 10), ("dpmsolver", 20), ("unipc", 5), ("unipc", 10), ("unipc", 20)]
TARGETS = {("ddim", 25): (15, 1.3), ("ddim-eta0.3", 25): (15, 1.3), ("dpmsolver", 10): (40, 1.2),
           ("unipc", 10): (40, 1.2)}  # speed-up at least, FD ratio at most
NOISE_SEED, SAMPLER_SEED = 2020, 1  # draw k's noises use seed NOISE_SEED + k, its contexts seed k
CONTEXT_REFERENCE_PATH = DATA_DIR / "ddpm500_context_samples.npz"
ODE_SOLVERS = {"DPM-Solver++": DPMSolverSampler, "UniPC": UniPCSampler}  # each compared with DDIM-20


def make(sampler, schedule):
    """A fresh sampler for a name in CONFIGURATIONS (a name with -eta is DDIM with that eta)."""
    if sampler.startswith("ddim-eta"):
        return DDIMSampler(schedule, eta=float(sampler.removeprefix("ddim-eta")))
    return sampler


def sample(model, schedule, noise, sampler, steps, contexts, seed=SAMPLER_SEED, batch=250):
    """Sprites from `noise` in batches (same noise, same fresh-noise seed for every sampler)."""
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for i in range(0, len(noise), batch):
        c = None if contexts is None else contexts[i : i + batch]
        chunks.append(generate(model, sampler, noise[i : i + batch], steps, c, generator, progress=False).images)
    return torch.cat(chunks)


def draw_contexts(metrics, n, seed):
    """n one-hot contexts with groups in the held-out proportions, as the FD's reference set has them."""
    labels = metrics.validation.labels[torch.randint(len(metrics.validation), (n,), generator=torch.Generator().manual_seed(seed))]
    return torch.stack([context_vector(int(g)) for g in labels])


def benchmark(name, model, schedule, metrics, args, conditional):
    draws = [torch.randn(args.n, 3, 16, 16, generator=torch.Generator().manual_seed(NOISE_SEED + k)) for k in range(args.draws)]
    contexts = [draw_contexts(metrics, args.n, k) if conditional else None for k in range(args.draws)]
    timing_noise = draws[0][: args.batch]
    timing_contexts = None if contexts[0] is None else contexts[0][: args.batch]
    rows = {}
    for sampler, steps in CONFIGURATIONS:
        seconds = []
        for _ in range(args.repeats if sampler != "ddpm" else max(1, args.repeats // 2)):
            start = time.perf_counter()
            generate(model, make(sampler, schedule), timing_noise, steps, timing_contexts, torch.Generator().manual_seed(1), progress=False)
            seconds.append(time.perf_counter() - start)
        fds = [metrics.frechet(sample(model, schedule, noise, make(sampler, schedule), steps, c)) for noise, c in zip(draws, contexts)]
        error = statistics.stdev(fds) / len(fds) ** 0.5 if len(fds) > 1 else float("nan")
        rows[(sampler, steps)] = {"seconds": statistics.median(seconds), "fd": statistics.mean(fds), "error": error, "fds": fds}
        print(f"  {sampler:9s} {steps:3d} steps: {rows[(sampler, steps)]['seconds']:7.2f} s, FD {statistics.mean(fds):.3f}", flush=True)
    floors = [metrics.real_floor(args.n, seed=k) for k in range(args.draws)]
    base = rows[("ddpm", 500)]
    print(f"\n{name}: {args.batch} sprites per timing; FD at N = {args.n}, mean ± standard error over {args.draws} draws of noise, "
          f"then each draw's (real-vs-real floor {statistics.mean(floors):.3f}: {' '.join(f'{f:.3f}' for f in floors)})")
    print(f"  {'sampler':16s} {'time s':>8s} {'speed-up':>9s} {'FD':>14s} {'FD/DDPM':>8s}  {'per draw':{6 * args.draws}s}  target")
    for (sampler, steps), row in rows.items():
        speedup, ratio = base["seconds"] / row["seconds"], row["fd"] / base["fd"]
        target = ""
        if (sampler, steps) in TARGETS:
            need_speed, need_ratio = TARGETS[(sampler, steps)]
            met = speedup >= need_speed and ratio <= need_ratio
            target = f">= {need_speed}x and <= {need_ratio}x: {'met' if met else 'NOT met'}"
        per_draw = " ".join(f"{fd:5.3f}" for fd in row["fds"])
        print(f"  {sampler + '-' + str(steps):16s} {row['seconds']:8.2f} {speedup:8.1f}x {row['fd']:7.3f} ± {row['error']:.3f} "
              f"{ratio:7.2f}x  {per_draw:{6 * args.draws}s}  {target}")

    ode_error(model, schedule, draws[0][: args.ode_n], None if contexts[0] is None else contexts[0][: args.ode_n])


@torch.inference_mode()
def exact_ode(model, schedule, noise, contexts, batch=128):
    """DDIM over every level without clipping (the ODE's solution), and RMS |d x0_hat / d lambda| between levels."""
    sampler = DDIMSampler(schedule, clip_x0=False)
    grid = sampler.timesteps(schedule.T)
    squared_change = torch.zeros(len(grid) - 1, dtype=torch.float64)
    finals = []
    for i in range(0, len(noise), batch):
        x, c, previous = noise[i : i + batch], None if contexts is None else contexts[i : i + batch], None
        for k, (t, t_prev) in enumerate(grid):
            output = model(x, torch.full((len(x),), t, dtype=torch.long), c)
            x, x0_hat = sampler.step(output, t, t_prev, x, prediction=model.config.prediction)
            if previous is not None:
                squared_change[k - 1] += (x0_hat - previous).double().pow(2).sum()
            previous = x0_hat
        finals.append(x)
    levels = torch.tensor([t for t, _ in grid])
    lambdas = half_log_snr(schedule, levels).double().cpu()
    rate = (squared_change / noise[0].numel() / len(noise)).sqrt() / (lambdas[1:] - lambdas[:-1])
    return torch.cat(finals), (lambdas[1:] + lambdas[:-1]) / 2, rate


def ode_error(model, schedule, noise, contexts, parts=4):
    """Solver error at 20 steps against the exact ODE from the same noise, and where along it x0_hat moves fastest.

    Also the RMS ratio on `parts` equal subsets of the sprites: a handful of sprites near a fork in the
    ODE's flow, which a 20-step sampler sends to a different sprite, make most of the RMS, so the ratio
    moves a lot from one set of noises to another."""
    exact, midpoints, rate = exact_ode(model, schedule, noise, contexts)
    samplers = {"DDIM": DDIMSampler} | ODE_SOLVERS
    errors = {name: (sample(model, schedule, noise, sampler_class(schedule, clip_x0=False), 20, contexts) - exact).pow(2).mean(dim=(1, 2, 3)).sqrt()
              for name, sampler_class in samplers.items()}
    rms = {name: e.pow(2).mean().sqrt().item() for name, e in errors.items()}
    median = {name: e.median().item() for name, e in errors.items()}
    print(f"  ODE error at 20 steps (default grid, no clipping; vs DDIM-500, {len(noise)} sprites): DDIM RMS {rms['DDIM']:.4f}, "
          f"median {median['DDIM']:.4f}")
    for name in ODE_SOLVERS:
        ratio = rms["DDIM"] / rms[name]
        subsets = [(d.pow(2).mean().sqrt() / s.pow(2).mean().sqrt()).item() for d, s in zip(errors["DDIM"].chunk(parts), errors[name].chunk(parts))]
        worst = errors[name].sort(descending=True).values
        print(f"    {name:12s} RMS {rms[name]:.4f}, {ratio:.1f}x closer than DDIM (target >= 5x: {'met' if ratio >= 5 else 'NOT met'}); "
              f"median {median[name]:.4f}, {median['DDIM'] / median[name]:.1f}x")
        print(f"    {'':12s} RMS ratio on {parts} subsets of {len(noise) // parts} sprites: {' '.join(f'{r:.1f}x' for r in subsets)}; "
              f"its 1% worst sprites make {worst[: max(1, len(worst) // 100)].pow(2).sum() / worst.pow(2).sum():.0%} of its squared error")
    # How sure is the reference itself? The second-order solver through the same 500 levels should agree with it.
    second_order = sample(model, schedule, noise, DPMSolverSampler(schedule, clip_x0=False, spacing="time"), schedule.T, contexts)
    spread = (second_order - exact).pow(2).mean(dim=(1, 2, 3)).sqrt()
    print(f"  the reference's own uncertainty: DPM-Solver++ through all 500 levels lands RMS {spread.pow(2).mean().sqrt():.4f} "
          f"(median {spread.median():.4f}) from DDIM-500; {int((spread > 0.05).sum())} sprites differ by more than 0.05, "
          f"the most by {spread.max():.3f}")
    edges = torch.arange(-5.0, 5.01, 0.5)
    cells = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (midpoints >= low) & (midpoints < high)
        if inside.any():
            cells.append(f"[{low:+.1f},{high:+.1f}) {rate[inside].mean():.2f}")
    print("  RMS |d x0_hat / d lambda| along the ODE, by lambda:")
    for i in range(0, len(cells), 5):
        print("    " + "   ".join(cells[i : i + 5]))


def save_context_reference(schedule, metrics, n):
    """Write the context model's DDPM-500 sprites of the first draw, as benchmark() samples them.

    Lab 4 compares its fast samplers with them on the same noises and groups: sampling them
    there would take a minute for 64 sprites on a laptop, most of that lab's running time.
    """
    noise = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(NOISE_SEED))
    contexts = draw_contexts(metrics, n, 0)
    images = sample(load_model("context").requires_grad_(False), schedule, noise, "ddpm", 500, contexts)
    np.savez_compressed(CONTEXT_REFERENCE_PATH, images=to_uint8(images), labels=contexts.argmax(dim=1).numpy(),
                        noise_seed=NOISE_SEED, context_seed=0, sampler_seed=SAMPLER_SEED, batch=250,
                        command=" ".join(["python", *sys.argv]))
    print(f"wrote {CONTEXT_REFERENCE_PATH}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per FD (default 1000)")
    parser.add_argument("--draws", type=int, default=4, help="draws of N noises; FDs are averaged over them (default 4)")
    parser.add_argument("--batch", type=int, default=64, help="sprites per timed run (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per sampler; median reported (DDPM: half)")
    parser.add_argument("--ode-n", type=int, default=1000, help="sprites for the ODE-error comparison (the first draw's)")
    parser.add_argument("--models", nargs="+", default=["unconditional", "context"],
                        help="denoisers in weights/manifest.json that tools.train made (a re-trained one too)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-reference", action="store_true",
                        help=f"only write the context model's first-draw DDPM-500 sprites (N = --n) to data/{CONTEXT_REFERENCE_PATH.name}")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    names = model_names(args.models)
    conditional = {name: trained_with_context(name) for name in names}
    torch.set_num_threads(args.threads)
    schedule = NoiseSchedule(500, "cosine")
    metrics = SpriteMetrics(load_model("classifier"))
    print(f"torch {torch.__version__}, {args.threads} threads; groups: {len(GROUPS)}")
    if args.save_reference:
        return save_context_reference(schedule, metrics, args.n)
    for name in names:
        print(f"\n== {name} ==")
        benchmark(name, load_model(name).requires_grad_(False), schedule, metrics, args, conditional[name])


if __name__ == "__main__":
    main()
