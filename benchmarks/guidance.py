"""Guidance benchmark (Lab 5): class accuracy and Frechet distance across guidance scales, and a guided step's cost.

Run alone (another torch process on the same cores slows both several-fold):
    .venv/bin/python benchmarks/guidance.py                 # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/guidance.py --per-group 20  # a quicker, noisier look

FD compares with the held-out sprites weighted so that every group counts equally,
as the samples are asked for in equal numbers per group. Accuracy is judged by the course's evaluation classifier, which the guidance never
sees; "judge-known groups" are those it recognises on held-out real sprites with at
least 80% accuracy. Sampling is DDIM-25 (the course's: clipped, banded log-SNR grid) from
the same noises at every scale.
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
from shared.data import GROUPS  # noqa: E402
from shared.guidance import ClassifierFreeGuidance, ClassifierGuidance  # noqa: E402
from benchmarks.measures import balanced_real_floor  # noqa: E402
from shared.metrics import SpriteMetrics  # noqa: E402
from shared.samplers import generate  # noqa: E402
from shared.schedule import NoiseSchedule  # noqa: E402
from shared.weights import load_model, manifest_entry  # noqa: E402


def sweep(name, make_model, scales, schedule, x_T, labels, contexts, metrics, strong, steps):
    print(f"\n== {name} (DDIM-{steps}, {len(labels)} sprites, {len(labels) // len(GROUPS)} per group) ==")
    header = "  scale   acc  judge-known    FD   " + " ".join(f"{g[:8]:>8s}" for g in GROUPS)
    print(header)
    results = {}
    for scale in scales:
        images = torch.cat([generate(make_model(scale, labels[i : i + 150]), "ddim", x_T[i : i + 150], steps,
                                     None if contexts is None else contexts[i : i + 150], progress=False).images
                            for i in range(0, len(labels), 150)])
        accuracy = metrics.class_accuracy(images, labels)
        known = float(np.mean([accuracy["per_group"][GROUPS[g]] for g in strong]))
        results[scale] = (accuracy["overall"], known, metrics.frechet(images, balanced=True))
        print(f"  {scale:5.1f}  {accuracy['overall']:4.0%}  {known:11.0%}  {results[scale][2]:5.2f}   "
              + " ".join(f"{accuracy['per_group'][g]:8.0%}" for g in GROUPS), flush=True)
    return results


def seconds(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=50, help="sprites per group at every scale (default 50)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    schedule = NoiseSchedule(500, "cosine")
    metrics = SpriteMetrics(load_model("classifier"))
    real = manifest_entry("classifier")["validation_accuracy_per_group"]
    strong = [i for i, g in enumerate(GROUPS) if real[g] >= 0.8]
    print(f"torch {torch.__version__}, {args.threads} threads; judge-known groups (real accuracy >= 80%): "
          + ", ".join(f"{GROUPS[g]} {real[GROUPS[g]]:.0%}" for g in strong))
    labels = torch.arange(len(GROUPS)).repeat_interleave(args.per_group)
    contexts = torch.nn.functional.one_hot(labels, len(GROUPS)).float()
    x_T = torch.randn(len(labels), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    print(f"real-vs-real floor at N = {len(labels)}, groups weighted equally: {balanced_real_floor(metrics, len(labels)):.2f}")

    context_model = load_model("context").requires_grad_(False)
    cfg = sweep("classifier-free guidance, context model", lambda w, _: ClassifierFreeGuidance(context_model, w),
                [0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0], schedule, x_T, labels, contexts, metrics, strong, args.steps)
    unconditional = load_model("unconditional").requires_grad_(False)
    guidance_classifier = load_model("guidance_classifier").requires_grad_(False)
    classifier = sweep("classifier guidance, unconditional model",
                       lambda s, y: ClassifierGuidance(unconditional, guidance_classifier, y, s),
                       [0.0, 1.0, 3.0, 10.0, 30.0, 100.0], schedule, x_T, labels, None, metrics, strong, args.steps)

    best_w = max(cfg, key=lambda w: cfg[w][1])
    lowest_fd = min(cfg, key=lambda w: cfg[w][2])
    print(f"\nclassifier-free: best judge-known accuracy {cfg[best_w][1]:.0%} at w = {best_w} "
          f"(target >= 90%: {'met' if cfg[best_w][1] >= 0.9 else 'NOT met'}; unguided {cfg[0.0][1]:.0%}); "
          f"lowest FD {cfg[lowest_fd][2]:.2f} at w = {lowest_fd}")
    reached = [s for s in classifier if classifier[s][1] >= 0.8]
    print(f"classifier guidance: judge-known accuracy {', '.join(f'{classifier[s][1]:.0%} at s={s}' for s in classifier)}; "
          f"target >= 80%: {'met at s = ' + str(reached[0]) if reached else 'NOT met'}")

    print("\n== cost of one guided step (median of 30 calls) ==")
    for batch in (1, 64):
        x, t = torch.randn(batch, 3, 16, 16), torch.full((batch,), 250)
        c = torch.nn.functional.one_hot(torch.arange(batch) % 9, 9).float()
        with torch.no_grad():
            plain = seconds(lambda: context_model(x, t, c), 30)
            batched = seconds(lambda: ClassifierFreeGuidance(context_model, 2.0)(x, t, c), 30)
            separate = seconds(lambda: 3.0 * context_model(x, t, c) - 2.0 * context_model(x, t, torch.zeros_like(c)), 30)
            guided_by_classifier = seconds(lambda: ClassifierGuidance(unconditional, guidance_classifier, torch.arange(batch) % 9, 3.0)(x, t), 30)
        print(f"  batch {batch:2d}: unguided {plain * 1e3:6.2f} ms; classifier-free batched {batched / plain:.2f}x, "
              f"two calls {separate / plain:.2f}x; classifier guidance {guided_by_classifier / plain:.2f}x")


if __name__ == "__main__":
    main()
