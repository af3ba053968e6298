"""Foundation benchmark: our denoiser against a DeepLearning.AI-style ContextUnet, and the shipped models' quality.

Run alone (another torch process on the same cores slows both several-fold):
    .venv/bin/python benchmarks/foundation.py                 # everything, about 45 min on 2 cores
    .venv/bin/python benchmarks/foundation.py --only speed    # throughput and sampling time, ~8 min
    .venv/bin/python benchmarks/foundation.py --only budget   # equal wall-clock training, ~30 min
    .venv/bin/python benchmarks/foundation.py --only quality  # shipped models at N = 1000, ~13 min
    (--models context samples only the context model in the quality section. --models takes any
    denoiser in weights/manifest.json that python -m tools.train made, a re-trained one too,
    its names separated by spaces or commas, as in benchmarks/fast_sampling.py)
Both networks use the same threads, batch, data, schedule, loss, optimiser and
EMA; only the network differs. Times are medians of several runs; every ratio
compares two numbers measured in this same run.
"""

from __future__ import annotations

import argparse
import copy
import math
import resource
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.context_unet import ContextUnet  # noqa: E402
from shared.data import GROUPS, load_sprites  # noqa: E402
from benchmarks.measures import near_copies  # noqa: E402
from shared.metrics import SpriteMetrics  # noqa: E402
from shared.model import Denoiser  # noqa: E402
from shared.samplers import generate  # noqa: E402
from shared.schedule import NoiseSchedule  # noqa: E402
from tools.train import denoising_loss, draw_denoising_batch, learning_rate, update_weights  # noqa: E402
from shared.weights import WeightsError, load_model, manifest_entry  # noqa: E402

T = 500


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


class Baseline(nn.Module):
    """ContextUnet behind our interface: integer t in 1..T becomes the float t/T it expects."""

    def __init__(self):
        super().__init__()
        self.net = ContextUnet(n_feat=64, n_cfeat=len(GROUPS), height=16)
        self.config = SimpleNamespace(prediction="eps", T=T)

    def forward(self, x, t, context=None):
        return self.net(x, t.float() / T, context)


def networks() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"ours": Denoiser(), "ContextUnet": Baseline()}


def batch_loss(model, schedule, images, generator, batch_size):
    """The unconditional denoising loss of one random batch (the same draws for either network)."""
    index, t, noise = draw_denoising_batch(images, batch_size, T, generator)
    no_context = torch.ones(batch_size, dtype=torch.bool)
    return denoising_loss(model, schedule, images[index], torch.zeros(batch_size, 9), t, noise, no_context)


def train_steps(model, schedule, images, generator, steps, batch_size, lr=1e-3):
    """`steps` optimisation steps; returns seconds per step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(steps):
        loss = batch_loss(model, schedule, images, generator, batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def multiply_adds(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> float:
    """Multiply-adds per sprite of one forward pass, counted in its convolutions and linear layers.

    Attention's two small matrix products and the elementwise layers are left out: they
    are under 1% of either network's multiply-adds.
    """
    total = 0

    def count(module, inputs, output):
        nonlocal total
        kernel = math.prod(getattr(module, "kernel_size", (1,)))
        if isinstance(module, nn.ConvTranspose2d):  # each input value meets out_channels x kernel weights
            total += inputs[0].numel() * module.out_channels // module.groups * kernel
        elif isinstance(module, nn.Conv2d):  # each output value sums in_channels x kernel products
            total += output.numel() * module.in_channels // module.groups * kernel
        else:
            total += output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    try:
        with torch.inference_mode():
            model(x, t)
    finally:
        for hook in hooks:
            hook.remove()
    return total / len(x)


def interleaved_forward_ms(models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, float]:
    """Median milliseconds of one forward pass at each of DDPM's 500 timesteps, the networks taking turns
    pass by pass, so a slower or faster stretch of the machine hits both alike."""
    times = {name: [] for name in models}
    with torch.inference_mode():
        for level in range(T, 0, -1):
            t = torch.full((len(x),), level)
            for name, model in models.items():
                start = time.perf_counter()
                model(x, t)
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def speed(args, schedule, images):
    print(f"\n== Speed: {args.threads} threads, batch {args.batch_size} ==")
    models = networks()
    sprite, level = torch.zeros(1, 3, 16, 16), torch.tensor([T // 2])
    work = {name: multiply_adds(copy.deepcopy(model).eval(), sprite, level) for name, model in models.items()}
    for name, model in models.items():
        print(f"{name:12s} {count_parameters(model) / 1e6:.2f} M parameters, {work[name] / 1e6:.1f} M multiply-adds per sprite")
    print(f"multiply-adds ContextUnet / ours: {work['ContextUnet'] / work['ours']:.2f}x "
          "(the speed-up if both ran their arithmetic equally fast)")
    per_step = {name: [] for name in models}
    generator = torch.Generator().manual_seed(0)
    for name, model in models.items():
        train_steps(model, schedule, images, generator, 3, args.batch_size)  # warm-up
    for _ in range(args.repeats):  # alternate, so drift in machine speed hits both
        for name, model in models.items():
            per_step[name].append(train_steps(model, schedule, images, generator, 10, args.batch_size))
    throughput = {name: args.batch_size / statistics.median(v) for name, v in per_step.items()}
    for name, value in throughput.items():
        print(f"training throughput  {name:12s} {value:7.0f} images/s")
    print(f"training throughput ratio ours / ContextUnet: {throughput['ours'] / throughput['ContextUnet']:.2f}x (target >= 3x)")

    seconds = {name: [] for name in models}
    noise = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for _ in range(args.sampling_repeats):
        for name, model in models.items():
            model.eval()
            start = time.perf_counter()
            generate(model, "ddpm", noise, generator=torch.Generator().manual_seed(2), progress=False)
            seconds[name].append(time.perf_counter() - start)
    for name, values in seconds.items():
        print(f"500-step DDPM, 64 sprites  {name:12s} {statistics.median(values):6.1f} s (median of {len(values)})")
    ratio = statistics.median(seconds["ContextUnet"]) / statistics.median(seconds["ours"])
    print(f"sampling speed-up ours vs ContextUnet: {ratio:.2f}x (target >= 3x)")
    forward = interleaved_forward_ms(models, noise)
    print(f"one forward pass of 64 sprites, the networks taking turns at each of the 500 timesteps "
          f"(median): ours {forward['ours']:.1f} ms, ContextUnet {forward['ContextUnet']:.1f} ms, "
          f"{forward['ContextUnet'] / forward['ours']:.2f}x")


def sample_n(model, schedule, n, seed, contexts=None, batch=250):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        noise = torch.randn(min(batch, n - i), 3, 16, 16, generator=generator)
        c = None if contexts is None else contexts[i : i + len(noise)]
        out.append(generate(model, "ddpm", noise, contexts=c, generator=generator, progress=False).images)
    return torch.cat(out)


def budget(args, schedule, images, metrics):
    print(f"\n== Equal wall-clock training: {args.budget_s:.0f} s each, batch {args.batch_size}, lr 1e-3 ==")
    results = {}
    for name, model in networks().items():
        ema = copy.deepcopy(model).eval()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        start, steps, rss_before = time.perf_counter(), 0, peak_rss_mb()
        while (elapsed := time.perf_counter() - start) < args.budget_s:
            loss = batch_loss(model, schedule, images, generator, args.batch_size)
            update_weights(model, ema, optimizer, loss, learning_rate(int(1000 * elapsed / args.budget_s), 1000, 1e-3, 20), steps, 0.999)
            steps += 1
        if name == "ours":
            print(f"peak memory of the benchmark process while training ours: {peak_rss_mb():.0f} MB "
                  f"(was {rss_before:.0f} MB before; target < 2048 MB)")
        start = time.perf_counter()
        samples = sample_n(ema, schedule, args.n_budget, seed=5)
        fd = metrics.frechet(samples)
        results[name] = fd
        print(f"{name:12s} {steps:6d} steps ({steps * args.batch_size / args.budget_s:.0f} images/s), "
              f"FD at N={args.n_budget}: {fd:.2f} (sampling took {time.perf_counter() - start:.0f} s)")
    floor = metrics.real_floor(args.n_budget)
    print(f"real-vs-real floor at N={args.n_budget}: {floor:.2f}")
    print(f"FD ratio ours / ContextUnet: {results['ours'] / results['ContextUnet']:.2f} (target <= 0.5)")


def trained_with_context(name: str, option: str = "--models") -> bool:
    """Whether the denoiser `name` (one that tools.train made) learnt groups; exits with a clear message,
    naming the command-line `option` that gave the name, otherwise."""
    try:
        entry = manifest_entry(name)
    except WeightsError as error:
        raise SystemExit(f"{option}: {error}") from None
    if "p_uncond" not in entry.get("training", {}):
        raise SystemExit(f"{option}: {name!r} is not a denoiser trained by tools.train "
                         "(distilled students are measured by benchmarks/distillation.py)")
    return entry["training"]["p_uncond"] < 1  # context dropped for only part of each batch


def model_names(arguments: list[str]) -> list[str]:
    """Names given to --models, separated by spaces, commas or both ("unconditional context", "unconditional,context")."""
    return [name for argument in arguments for name in argument.split(",") if name]


def quality(args, schedule, metrics):
    names = model_names(args.models)
    conditional = {name: trained_with_context(name) for name in names}  # checks every name before sampling
    n = args.n_quality
    floor = metrics.real_floor(n)
    print(f"\n== Shipped models, 500-step DDPM, N = {n} (real-vs-real floor {floor:.2f}) ==")
    for name in names:
        if conditional[name]:
            context_quality(name, schedule, metrics, n, floor)
            continue
        start = time.perf_counter()
        samples = sample_n(load_model(name), schedule, n, seed=11)
        fd = metrics.frechet(samples)
        copies = near_copies(metrics, samples)
        print(f"{name}: FD {fd:.2f} = {fd / floor:.2f}x floor; near copies {copies['share']:.1%} "
              f"(median nearest RMS {copies['median_rms']:.3f}); {time.perf_counter() - start:.0f} s")
    val_copies = near_copies(metrics, metrics.validation.images)
    print(f"for reference, held-out real sprites counted as near copies of training sprites: {val_copies['share']:.1%}")
    for name in names + ["classifier"]:
        entry = manifest_entry(name)
        print(f"{name}: trained {entry['training_time_s']:.0f} s on {entry.get('device', 'cpu')}, final loss {entry['final_loss']}")


def context_quality(name, schedule, metrics, n, floor):
    context = load_model(name)
    # Groups in the proportions of the held-out sprites (People & Body is 59%), so the FD
    # compares like with like; the accuracy of each group is then measured on its share.
    shares = torch.bincount(metrics.validation.labels, minlength=len(GROUPS)).double()
    labels = torch.multinomial(shares, n, replacement=True, generator=torch.Generator().manual_seed(13))
    contexts = torch.nn.functional.one_hot(labels, len(GROUPS)).float()
    samples = sample_n(context, schedule, n, seed=12, contexts=contexts)
    accuracy = metrics.class_accuracy(samples, labels)
    real = metrics.class_accuracy(metrics.validation.images, metrics.validation.labels)
    fd = metrics.frechet(samples)
    print(f"{name} (groups in held-out proportions): FD {fd:.2f} = {fd / floor:.2f}x floor; "
          f"near copies {near_copies(metrics, samples)['share']:.1%}")
    print(f"class accuracy of context samples: {accuracy['overall']:.1%} overall "
          f"(the classifier on held-out real sprites: {real['overall']:.1%})")
    for g, group in enumerate(GROUPS):
        print(f"  {group:18s} samples {accuracy['per_group'].get(group, float('nan')):6.1%} (n={int((labels == g).sum()):3d})"
              f"   real held-out {real['per_group'][group]:6.1%} (n={int((metrics.validation.labels == g).sum())})")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["speed", "budget", "quality"], action="append")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed training windows per network")
    parser.add_argument("--sampling-repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=600)
    parser.add_argument("--n-budget", type=int, default=500)
    parser.add_argument("--n-quality", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=["unconditional", "context"],
                        help="denoisers in weights/manifest.json that the quality section samples (a re-trained one too)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections = args.only or ["speed", "budget", "quality"]
    schedule = NoiseSchedule(T, "cosine")
    images = load_sprites("train").images
    metrics = SpriteMetrics(load_model("classifier")) if {"budget", "quality"} & set(sections) else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sections: {', '.join(sections)}")
    for section in sections:  # in the order asked for
        if section == "speed":
            speed(args, schedule, images)
        elif section == "budget":
            budget(args, schedule, images, metrics)
        else:
            quality(args, schedule, metrics)


if __name__ == "__main__":
    main()
