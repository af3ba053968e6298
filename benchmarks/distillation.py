"""Distillation benchmark (Lab 6): the shipped students against 500-step DDPM with their teacher, same noise.

Run alone (another torch process on the same cores slows both several-fold):
    .venv/bin/python benchmarks/distillation.py                    # 4 draws of N = 1000, about 35 min on 2 cores
    .venv/bin/python benchmarks/distillation.py --draws 1          # one draw, about 10 min: a quick look
    .venv/bin/python benchmarks/distillation.py --save-reference   # also rewrite data/ddpm500_samples.npz for Lab 6

For the teacher's samplers (DDPM-500, DDIM-25, DPM-Solver++ at 10 steps) and every
distilled student it prints:
  sprites/s  sprites per second for a batch of `--batch` (median of `--repeats` runs, a third as many
             for DDIM-25 and DPM-Solver++-10; DDPM-500: its full sampling run), and the speed-up
             over DDPM-500 measured in this same run;
  FD         Frechet distance of N samples to the held-out sprites: its mean over `--draws` draws of
             N noises (seeds 2020, 2021, ...; every sampler gets the same noises), the standard error
             of that mean, each draw's FD, and the ratio of the mean to DDPM-500's mean. One draw is
             not enough: at N = 1000 the FD of the same sampler moves by about 0.1 (15%) from one
             draw of noise to the next, and so does the real-vs-real floor, more than the targets'
             margins;
  recall     share of samples within measures.NEAR_COPY_RMS of a training sprite, and the median distance
             to the nearest one (students should generate, not recall).
Then, for each progressive student, how far each of its steps lands from where its own teacher
lands (RMS over 512 starts; the teacher is the round's: the previous student, or the base model
with DPM-Solver++ on the finer grid), from three kinds of starting point: the teacher's own path from
noise, noised training sprites (what the round trained on) and noised held-out sprites. Where the
first is much larger than the second, the student has not generalised from training to sampling.
The targets of issue 7 are printed beside the figures.
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
from shared.data import DATA_DIR, to_uint8  # noqa: E402
from shared.distillation import run_teacher, student_sampler  # noqa: E402
from tools.distill import round_teacher  # noqa: E402
from benchmarks.measures import near_copies  # noqa: E402
from shared.metrics import SpriteMetrics  # noqa: E402
from shared.samplers import generate  # noqa: E402
from shared.schedule import NoiseSchedule  # noqa: E402
from shared.weights import available_weights, load_model, manifest_entry  # noqa: E402

REFERENCE_PATH = DATA_DIR / "ddpm500_samples.npz"
NOISE_SEED, SAMPLER_SEED = 2020, 1
# name: (at least this speed-up over DDPM-500, at most this FD ratio); and sprites per second for one-step students.
TARGETS = {"knowledge_1step": (400, 2.0), "progressive_1step": (400, 2.0), "progressive_4step": (None, 1.3)}
ONE_STEP_RATE = 1000


def sample(model, schedule, noise, sampler, steps, batch):
    generator = torch.Generator().manual_seed(SAMPLER_SEED)
    chunks = []
    for i in range(0, len(noise), batch):
        chunks.append(generate(model, sampler, noise[i : i + batch], steps, generator=generator, progress=False).images)
    return torch.cat(chunks)


def sprites_per_second(model, schedule, sampler, steps, batch, repeats):
    x = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    generate(model, sampler, x, steps, progress=False)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(model, sampler, x, steps, generator=torch.Generator().manual_seed(1), progress=False)
        seconds.append(time.perf_counter() - start)
    return batch / statistics.median(seconds)


@torch.no_grad()
def local_errors(name, schedule, metrics, n=512):
    """RMS miss of each step of a progressive student against its teacher's steps over the same stretch."""
    entry = manifest_entry(name)
    teacher, teacher_sampler, teacher_levels = round_teacher(entry["distilled_from"].split(" ")[0], schedule, entry["training"]["base_steps"])
    student, sampler, levels = load_model(name).requires_grad_(False), student_sampler(entry, schedule), entry["sampling"]["levels"]
    stride = (len(teacher_levels) - 1) // (len(levels) - 1)
    generator = torch.Generator().manual_seed(3)

    def noised(sprites, t):
        picked = sprites.images[torch.randint(len(sprites), (n,), generator=generator)]
        return schedule.add_noise(picked, torch.full((n,), t, dtype=torch.long), torch.randn(n, 3, 16, 16, generator=generator))

    print(f"  {name} (teacher: {entry['distilled_from']})")
    on_path = torch.randn(n, 3, 16, 16, generator=generator)
    for i, (t, t_next) in enumerate(zip(levels[:-1], levels[1:])):
        segment = teacher_levels[i * stride : (i + 1) * stride + 1]
        misses = []
        for start in (on_path, noised(metrics.train, t), noised(metrics.validation, t)):
            miss = run_teacher(student, sampler, [t, t_next], start) - run_teacher(teacher, teacher_sampler, segment, start)
            misses.append(miss.pow(2).mean().sqrt().item())
        print(f"    {t:3d} -> {t_next:3d}: " + "  ".join(f"{m:14.4f}" for m in misses))
        on_path = run_teacher(teacher, teacher_sampler, segment, on_path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per FD (default 1000)")
    parser.add_argument("--draws", type=int, default=4, help="draws of N noises; FDs are averaged over them (default 4)")
    parser.add_argument("--batch", type=int, default=250, help="sprites per timed run (default 250)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per fast sampler; median reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-reference", action="store_true", help=f"write the first draw's DDPM-500 samples to {REFERENCE_PATH.relative_to(DATA_DIR.parent)}")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    torch.set_num_threads(args.threads)
    teacher = load_model("unconditional").requires_grad_(False)
    schedule = NoiseSchedule(500, manifest_entry("unconditional")["config"]["schedule"])
    metrics = SpriteMetrics(load_model("classifier"))
    draws = [torch.randn(args.n, 3, 16, 16, generator=torch.Generator().manual_seed(NOISE_SEED + k)) for k in range(args.draws)]
    students = [name for name in available_weights() if "sampling" in manifest_entry(name)]
    print(f"torch {torch.__version__}, {args.threads} threads; teacher 'unconditional'; students: {', '.join(students)}")

    rows = {}
    start = time.perf_counter()
    images = [sample(teacher, schedule, noise, "ddpm", 500, args.batch) for noise in draws]
    rows["DDPM-500"] = {"rate": args.n * args.draws / (time.perf_counter() - start), "images": images}
    if args.save_reference:
        np.savez_compressed(REFERENCE_PATH, images=to_uint8(images[0]), noise_seed=NOISE_SEED, sampler_seed=SAMPLER_SEED,
                            batch=args.batch, command=" ".join(["python", *sys.argv]))
        print(f"wrote {REFERENCE_PATH}")
    for label, sampler, steps in (("DDIM-25", "ddim", 25), ("solver-10", "dpmsolver", 10)):
        rows[label] = {"rate": sprites_per_second(teacher, schedule, sampler, steps, args.batch, max(1, args.repeats // 3)),
                       "images": [sample(teacher, schedule, noise, sampler, steps, args.batch) for noise in draws]}
    for name in students:
        model, sampler = load_model(name).requires_grad_(False), student_sampler(manifest_entry(name), schedule)
        rows[name] = {"rate": sprites_per_second(model, schedule, sampler, None, args.batch, args.repeats),
                      "images": [sample(model, schedule, noise, sampler, None, args.batch) for noise in draws]}

    for row in rows.values():
        row["fds"] = [metrics.frechet(images) for images in row["images"]]
        row["fd"] = statistics.mean(row["fds"])
        row["error"] = statistics.stdev(row["fds"]) / len(row["fds"]) ** 0.5 if len(row["fds"]) > 1 else float("nan")
    base = rows["DDPM-500"]
    floors = [metrics.real_floor(min(args.n, len(metrics.train)), seed=k) for k in range(args.draws)]
    print(f"\nFD at N = {args.n}: mean ± standard error over {args.draws} draws of noise (seeds {NOISE_SEED}..{NOISE_SEED + args.draws - 1}), "
          f"then each draw's; speed for batches of {args.batch} on {args.threads} threads")
    print(f"  {'sampler':18s} {'sprites/s':>10s} {'speed-up':>9s} {'FD':>14s} {'FD/DDPM':>8s} {'recalled':>9s} {'NN dist':>8s}  "
          f"{'per draw':{6 * args.draws}s}  target")
    for name, row in rows.items():
        copies = near_copies(metrics, torch.cat(row["images"]))
        speedup, ratio = row["rate"] / base["rate"], row["fd"] / base["fd"]
        target = ""
        if name in TARGETS:
            need_speed, need_ratio = TARGETS[name]
            checks = [ratio <= need_ratio] + ([speedup >= need_speed, row["rate"] >= ONE_STEP_RATE] if need_speed else [])
            wants = (f">= {need_speed}x, >= {ONE_STEP_RATE}/s and " if need_speed else "") + f"FD <= {need_ratio}x"
            target = f"{wants}: {'met' if all(checks) else 'NOT met'}"
        per_draw = " ".join(f"{fd:5.3f}" for fd in row["fds"])
        print(f"  {name:18s} {row['rate']:10.0f} {speedup:8.0f}x {row['fd']:7.3f} ± {row['error']:.3f} {ratio:7.2f}x "
              f"{copies['share']:8.1%} {copies['median_rms']:8.3f}  {per_draw:{6 * args.draws}s}  {target}")
    print(f"  real-vs-real FD floor at N = {args.n}, {args.draws} draws of training sprites: {statistics.mean(floors):.3f} "
          f"({' '.join(f'{f:.3f}' for f in floors)})")
    print(f"  real held-out sprites, nearest training sprite: median distance {near_copies(metrics, metrics.validation.images)['median_rms']:.3f}")

    print("\nEach progressive student's steps against its teacher's (RMS miss where the step lands), starting from")
    print(f"  {'':14s} {'teacher path':>14s}  {'noised train':>14s}  {'noised held-out':>14s}")
    for name in students:
        if "rounds" in manifest_entry(name)["training"]:
            local_errors(name, schedule, metrics)


if __name__ == "__main__":
    main()
