"""Re-train the shipped weights: `python -m tools.train {denoiser,classifier} --name NAME [options]`.

The exact command that produced each file in weights/ is recorded in
weights/manifest.json beside the training time and final loss; running it again
on 2 CPU threads reproduces that file's training (bit-identical only on the
same torch build and thread count, since CPU kernels differ).
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from shared.data import GROUPS, load_sprites
from shared.device import pick_device
from shared.model import ClassifierConfig, Denoiser, DenoiserConfig, SpriteClassifier, update_ema
from shared.schedule import SCHEDULE_KINDS, NoiseSchedule

from . import save_model


@dataclass
class DenoiserTraining:
    name: str = "unconditional"
    steps: int = 6000
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999  # sampling uses the exponential moving average of the weights
    p_uncond: float = 1.0  # share of the batch trained with "no context"; 1.0 = unconditional
    schedule: str = "cosine"  # or "flow": a flow-matching model on the straight path (Lab 7)
    seed: int = 0
    snapshots: list[int] = field(default_factory=list)  # steps at which to also ship the EMA weights
    threads: int = 2
    model: dict = field(default_factory=dict)  # DenoiserConfig overrides


@dataclass
class ClassifierTraining:
    name: str = "classifier"
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    noise_aware: bool = False  # True trains on x_t at random t, for classifier guidance
    schedule: str = "cosine"
    seed: int = 0
    threads: int = 2


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def denoising_loss(model, schedule, x0, contexts, t, noise, drop_context):
    """Ho et al. 2020 Algorithm 1 with context dropout: MSE between the model's output and its target.

    x0 (B,3,16,16), contexts (B,9), t (B,) ints in 1..T (floats in [0, 1] on a flow's path), noise like x0,
    drop_context (B,) bool: rows whose context becomes "no context" (zeros).
    """
    x_t = schedule.add_noise(x0, t, noise)
    contexts = contexts * (~drop_context).float()[:, None]
    target = schedule.training_target(model.config.prediction, x0, noise, t)
    return F.mse_loss(model(x_t, t, contexts), target)


def draw_denoising_batch(images: torch.Tensor, batch_size: int, T: int | None, generator: torch.Generator):
    """One training batch's random draws, in this order: which sprites (indices), their timesteps in 1..T
    (T None: flow times, uniform in [0, 1]), their noise."""
    device = images.device
    index = torch.randint(len(images), (batch_size,), generator=generator).to(device)
    if T is None:
        t = torch.rand(batch_size, generator=generator).to(device)
    else:
        t = torch.randint(1, T + 1, (batch_size,), generator=generator).to(device)
    noise = torch.randn(batch_size, *images.shape[1:], generator=generator).to(device)
    return index, t, noise


def update_weights(model, ema, optimizer, loss: torch.Tensor, lr: float, step: int, ema_decay: float) -> None:
    """One optimisation step at learning rate lr, gradients clipped to norm 1, then the EMA moves.

    The EMA's decay starts short, (1 + step) / (10 + step), so the average soon forgets the
    starting weights (random ones, or a teacher's that predicts something else).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    update_ema(ema, model, min(ema_decay, (1 + step) / (10 + step)))


def course_train_loop(model, optimizer, data, alpha_bars, n_steps, batch_size, generator, callback=None) -> list[float]:
    """Lab 2's `train` as the course writes it: n_steps of Ho et al. 2020, Algorithm 1 (eps target).

    Lab 2's demos run it while the student's loop, or a function it builds on, is unfinished;
    it lives here, not in the notebook, so that no demo cell prints the exercise's answer. Its
    draws are the lab's, in the lab's order, so it trains exactly as a finished `train` does.
    """
    losses = []
    for step in range(1, n_steps + 1):
        index, t, noise = draw_denoising_batch(data, batch_size, len(alpha_bars) - 1, generator)
        alpha_bar = alpha_bars[t].view(-1, *[1] * (data.ndim - 1))
        x_t = alpha_bar.sqrt() * data[index] + (1 - alpha_bar).sqrt() * noise
        optimizer.zero_grad()
        loss = F.mse_loss(model(x_t, t), noise)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    return losses


def train_denoiser(run: DenoiserTraining, command: str) -> None:
    torch.set_num_threads(run.threads)
    device = pick_device()
    generator = torch.Generator().manual_seed(run.seed)
    torch.manual_seed(run.seed)
    sprites = load_sprites("train")
    images, contexts = sprites.images.to(device), sprites.contexts.to(device)
    flow = run.schedule == "flow"
    model = Denoiser(DenoiserConfig(**{"schedule": run.schedule, **({"prediction": "velocity"} if flow else {}), **run.model})).to(device)
    ema = copy.deepcopy(model).eval()
    schedule = model.schedule
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=0.0)
    losses, start = [], time.perf_counter()

    def ship(name: str, step: int) -> None:
        save_model(ema, name, "denoiser", {
            "train_command": command,
            "training": asdict(run),
            "steps_trained": step,
            "training_time_s": round(time.perf_counter() - start, 1),
            "final_loss": round(sum(losses[-200:]) / max(1, len(losses[-200:])), 5) if losses else None,
            "device": str(device),
            "torch": torch.__version__,
        })

    progress = tqdm(range(run.steps), desc=f"training {run.name}")
    for step in progress:
        if step in run.snapshots:
            ship(f"{run.name}_step{step:04d}", step)
        index, t, noise = draw_denoising_batch(images, run.batch_size, schedule.T, generator)
        drop = (torch.rand(run.batch_size, generator=generator) < run.p_uncond).to(device)
        loss = denoising_loss(model, schedule, images[index], contexts[index], t, noise, drop)
        update_weights(model, ema, optimizer, loss, learning_rate(step, run.steps, run.lr, run.warmup_steps), step, run.ema_decay)
        losses.append(loss.item())
        if step % 50 == 0:
            progress.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    ship(run.name, run.steps)
    print(f"{run.name}: {run.steps} steps in {time.perf_counter() - start:.0f} s, final loss {sum(losses[-200:]) / len(losses[-200:]):.4f}")


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift by up to one pixel (padding with white) and add faint noise, so the classifier tolerates generated sprites."""
    B = images.shape[0]
    padded = F.pad(images, (1, 1, 1, 1), value=1.0)
    dx, dy = torch.randint(0, 3, (2, B), generator=generator).tolist()
    shifted = torch.stack([padded[i, :, dy[i] : dy[i] + 16, dx[i] : dx[i] + 16] for i in range(B)])
    sigma = 0.1 * torch.rand(B, 1, 1, 1, generator=generator)
    return shifted + sigma * torch.randn(shifted.shape, generator=generator)


def train_classifier(run: ClassifierTraining, command: str) -> None:
    torch.set_num_threads(run.threads)
    generator = torch.Generator().manual_seed(run.seed)
    torch.manual_seed(run.seed)
    train, validation = load_sprites("train"), load_sprites("validation")
    model = SpriteClassifier(ClassifierConfig(noise_aware=run.noise_aware))
    schedule = NoiseSchedule(model.config.T, run.schedule)
    # People & Body is 59% of the sprites: weight the loss so every group counts.
    counts = torch.bincount(train.labels, minlength=len(GROUPS)).float()
    class_weights = counts.sum() / (len(GROUPS) * counts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=0.05)
    start, losses = time.perf_counter(), []
    for step in (progress := tqdm(range(run.steps), desc=f"training {run.name}")):
        index = torch.randint(len(train), (run.batch_size,), generator=generator)
        x, y = augment(train.images[index], generator), train.labels[index]
        t = None
        if run.noise_aware:
            t = torch.randint(0, schedule.T + 1, (run.batch_size,), generator=generator)
            x = schedule.add_noise(x, t, torch.randn(x.shape, generator=generator))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, run.steps, run.lr, 100)
        loss = F.cross_entropy(model(x, t), y, weight=class_weights, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0:
            progress.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    model.eval()
    with torch.no_grad():
        t = torch.zeros(len(validation), dtype=torch.long) if run.noise_aware else None
        predicted = model(validation.images, t).argmax(1)
        # A guidance classifier works on noisy sprites: report how well it still sees the group.
        by_noise_level = {}
        if run.noise_aware:
            noise = torch.randn(validation.images.shape, generator=torch.Generator().manual_seed(1))
            for level in (100, 200, 300, 400):
                t_level = torch.full((len(validation),), level)
                noisy = schedule.add_noise(validation.images, t_level, noise)
                by_noise_level[level] = round(float((model(noisy, t_level).argmax(1) == validation.labels).float().mean()), 4)
    per_group = {
        GROUPS[g]: round(float((predicted[validation.labels == g] == g).float().mean()), 3) for g in range(len(GROUPS))
    }
    accuracy = float((predicted == validation.labels).float().mean())
    save_model(model, run.name, "classifier", {
        "train_command": command,
        "training": asdict(run),
        "training_time_s": round(time.perf_counter() - start, 1),
        "final_loss": round(sum(losses[-200:]) / len(losses[-200:]), 5),
        "validation_accuracy": round(accuracy, 4),
        "validation_accuracy_per_group": per_group,
        **({"validation_accuracy_at_t": by_noise_level} if run.noise_aware else {}),
        "torch": torch.__version__,
    })
    print(f"{run.name}: validation accuracy {accuracy:.3f}; per group {per_group}" + (f"; at t {by_noise_level}" if run.noise_aware else ""))


def settings_problem(settings: dict) -> str | None:
    """What is wrong with a run's command-line settings, if anything, before minutes of training start."""
    name = settings.get("name")  # None: shared.distill names the run after its method
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_]+", name):
        return f"--name must be letters, digits and underscores (it names weights/NAME.safetensors), got {settings['name']!r}"
    for key in ("steps", "batch_size", "lr", "threads"):
        if key in settings and not settings[key] > 0:
            return f"--{key.replace('_', '-')} must be positive, got {settings[key]}"
    for key in ("warmup_steps", "seed"):
        if key in settings and settings[key] < 0:
            return f"--{key.replace('_', '-')} must be >= 0, got {settings[key]}"
    if not 0 <= settings.get("ema_decay", 0) < 1:
        return f"--ema-decay must be in [0, 1), got {settings['ema_decay']}"
    if not 0 <= settings.get("p_uncond", 0) <= 1:
        return f"--p-uncond is the share of the batch trained without context, so in [0, 1]; got {settings['p_uncond']}"
    kinds = SCHEDULE_KINDS + ("flow",)
    if settings.get("schedule", "cosine") not in kinds:
        return f"--schedule must be one of {kinds}, got {settings['schedule']!r}"
    if settings.get("schedule") == "flow" and settings.get("prediction", "eps") != "eps":
        return "a flow model (--schedule flow) always predicts the velocity: leave out --prediction"
    return None


def parse_arguments(argv: list[str]) -> tuple[str, dict]:
    """("denoiser" or "classifier", the settings) from command-line words; every setting has a flag."""
    parser = argparse.ArgumentParser(prog="python -m tools.train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for what, defaults in (("denoiser", DenoiserTraining()), ("classifier", ClassifierTraining())):
        p = sub.add_parser(what)
        for key, value in asdict(defaults).items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                p.add_argument(flag, action="store_true", default=value)
            elif isinstance(value, list):
                p.add_argument(flag, type=lambda s: [int(v) for v in s.split(",") if v], default=value)
            elif isinstance(value, dict):
                p.add_argument("--prediction", choices=["eps", "x0", "v"], default="eps")
            else:
                p.add_argument(flag, type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    what = args.pop("what")
    problem = settings_problem(args)
    if problem:
        sub.choices[what].error(problem)
    return what, args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    what, settings = parse_arguments(argv)
    command = "python -m tools.train " + shlex.join(argv)
    if what == "denoiser":
        prediction = settings.pop("prediction")
        model = {} if settings["schedule"] == "flow" else {"prediction": prediction}
        train_denoiser(DenoiserTraining(**settings, model=model), command)
    else:
        train_classifier(ClassifierTraining(**settings), command)


if __name__ == "__main__":
    main()
