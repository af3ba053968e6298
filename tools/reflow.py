"""Reflow (Liu et al. 2023, sec. 2.3): straighten a flow model by re-training it on its own couplings.

    python -m tools.reflow --teacher flow --name reflow

1. Draw noises z and run the teacher's ODE from each (Heun, --pair-steps steps) to its sprite x.
   The pairs (z, x) are a coupling: each noise now has one sprite of its own, where independent
   (noise, sprite) pairs had none.
2. Train a copy of the teacher with the flow-matching loss on those pairs: x_t = (1 - t) x + t z,
   target z - x. The straight line from z to x is now what the ODE should follow, so the new
   flow's paths cross less and are straighter, and few Euler steps follow them well.
3. A share of every batch (--endpoint-share) sits at t = 1, where one Euler step from the noise
   must land on x itself: the one-step use of the model, which Liu et al. add as a separate
   distillation stage; here it is part of the one reflow run.

--init starts from another flow model's weights instead of the teacher's. The shipped
`reflow_distilled` is that second stage: `reflow` trained on fresh couplings (--seed 1) with
most of each batch at t = 1, Liu et al.'s distillation of the one-step map.

--feature-weight adds, on the one-step rows, a perceptual distance between the one-step sprite
and its coupled sprite, measured in the features of the frozen teacher's own U-Net (LPIPS's
recipe, Zhang et al. 2018, with the flow model as the feature network): squared error in pixels
rewards a blurred average of the sprites a noise might become, features reward sharp ones.
`reflow_perceptual` is `reflow_distilled` trained on so, on fresh couplings (--seed 2). The
classifier that scores the Frechet distance is never used in training.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from shared.device import pick_device
from shared.samplers import HeunSampler, generate
from shared.weights import load_model, manifest_entry

from . import save_model
from .train import learning_rate, settings_problem, update_weights


@dataclass
class Reflow:
    name: str = "reflow"
    teacher: str = "flow"
    init: str = ""  # the flow model whose weights training starts from; "" for the teacher's
    pairs: int = 8192  # (noise, sprite) couplings drawn from the teacher's ODE
    pair_steps: int = 15  # Heun steps per coupling (two network calls each)
    steps: int = 2000
    batch_size: int = 128
    lr: float = 5e-4
    warmup_steps: int = 50
    ema_decay: float = 0.995
    endpoint_share: float = 0.25  # share of each batch at t = 1, the one-step jump
    feature_weight: float = 0.0  # weight of the teacher-feature distance on the one-step rows (0: none)
    seed: int = 0
    threads: int = 2


@torch.no_grad()
def teacher_couplings(teacher, noise: torch.Tensor, n_steps: int, chunk: int = 512) -> torch.Tensor:
    """The teacher's sprite for each noise (N, 3, 16, 16): its ODE solved by Heun's method."""
    sampler = HeunSampler(teacher.schedule, shift=1.0)  # the even grid the shipped reflow's pairs were made on
    return torch.cat([generate(teacher, sampler, noise[i : i + chunk], n_steps, progress=False).images
                      for i in tqdm(range(0, len(noise), chunk), desc="teacher couplings")])


def reflow_loss(model, noise: torch.Tensor, sprites: torch.Tensor, t: torch.Tensor, features=None, feature_weight: float = 0.0) -> torch.Tensor:
    """Flow matching on coupled pairs: x_t on the line from sprite (t = 0) to its noise (t = 1), target noise - sprite;
    with `features`, plus feature_weight times the feature distance of the one-step sprites (rows at t = 1)."""
    x_t = model.schedule.add_noise(sprites, t, noise)
    velocity = model(x_t, t)
    loss = F.mse_loss(velocity, model.schedule.training_target("velocity", sprites, noise, t))
    ends = t == 1
    if features is not None and bool(ends.any()):
        one_step = noise[ends] - velocity[ends]  # one Euler step from the noise: x_0 = x_1 - v
        loss = loss + feature_weight * feature_distance(features, one_step, sprites[ends])
    return loss


class TeacherFeatures:
    """Feature maps of a frozen flow U-Net looking at clean sprites (t = 0): after each down block and the middle."""

    def __init__(self, network):
        self.network, self.maps = network, []
        for block in [*network.down_blocks, network.middle_block]:
            block.register_forward_hook(lambda module, inputs, output: self.maps.append(output))

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.maps = []
        self.network(images, torch.zeros(len(images), device=images.device))
        return self.maps


def feature_distance(features: TeacherFeatures, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over images of sum over layers of the mean squared distance between unit-normalised feature vectors (LPIPS eq. 1, unweighted)."""
    def unit(maps):  # each position's feature vector scaled to length 1
        return [m / (m.norm(dim=1, keepdim=True) + 1e-6) for m in maps]

    with torch.no_grad():
        wanted = unit(features(targets))
    return sum((got - want).pow(2).sum(dim=1).mean() for got, want in zip(unit(features(images)), wanted))


def draw_times(batch_size: int, endpoint_share: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform flow times in [0, 1], with the first round(endpoint_share * batch_size) set to exactly 1."""
    t = torch.rand(batch_size, generator=generator)
    t[: round(endpoint_share * batch_size)] = 1.0
    return t


def train_reflow(run: Reflow, command: str) -> None:
    torch.set_num_threads(run.threads)
    torch.manual_seed(run.seed)
    device = pick_device()
    teacher = load_model(run.teacher, device).requires_grad_(False)
    generator = torch.Generator().manual_seed(run.seed)
    start = time.perf_counter()
    noise = torch.randn(run.pairs, 3, 16, 16, generator=generator)
    sprites = teacher_couplings(teacher, noise.to(device), run.pair_steps)
    noise, sprites = noise.to(device), sprites.to(device)
    pair_seconds = time.perf_counter() - start

    start_from = load_model(run.init, device) if run.init else teacher
    model = copy.deepcopy(start_from).train().requires_grad_(True)
    ema = copy.deepcopy(model).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=0.0)
    features = TeacherFeatures(copy.deepcopy(teacher).eval().requires_grad_(False)) if run.feature_weight else None
    losses, start = [], time.perf_counter()
    for step in (progress := tqdm(range(run.steps), desc=f"reflowing {run.teacher}")):
        index = torch.randint(run.pairs, (run.batch_size,), generator=generator).to(device)
        t = draw_times(run.batch_size, run.endpoint_share, generator).to(device)
        loss = reflow_loss(model, noise[index], sprites[index], t, features, run.feature_weight)
        update_weights(model, ema, optimizer, loss, learning_rate(step, run.steps, run.lr, run.warmup_steps), step, run.ema_decay)
        losses.append(loss.item())
        if step % 25 == 0:
            progress.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.4f}")
    seconds = time.perf_counter() - start
    final = round(sum(losses[-100:]) / len(losses[-100:]), 6)
    save_model(ema, run.name, "denoiser", {
        "train_command": command,
        "training": asdict(run),
        "reflowed_from": run.teacher,
        **({"initialised_from": run.init} if run.init else {}),
        "default_sampling": {"sampler": "euler", "steps": 1},
        "training_time_s": round(seconds + pair_seconds, 1),
        "pair_time_s": round(pair_seconds, 1),
        "final_loss": final,
        "device": str(device),
        "torch": torch.__version__,
    })
    print(f"{run.name}: {run.pairs} couplings in {pair_seconds:.0f} s, {run.steps} steps in {seconds:.0f} s, final loss {final:.4f}")


def parse_arguments(argv: list[str]) -> Reflow:
    parser = argparse.ArgumentParser(prog="python -m tools.reflow", description=__doc__.splitlines()[0])
    for key, value in asdict(Reflow()).items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    settings = vars(parser.parse_args(argv))
    problem = settings_problem(settings)
    if problem is None and not 0 <= settings["endpoint_share"] <= 1:
        problem = f"--endpoint-share is a share of the batch, so in [0, 1]; got {settings['endpoint_share']}"
    if problem is None and not settings["feature_weight"] >= 0:
        problem = f"--feature-weight must be >= 0, got {settings['feature_weight']}"
    if problem is None and not (settings["pairs"] > 0 and settings["pair_steps"] > 0):
        problem = "--pairs and --pair-steps must be positive"
    if problem is None:
        try:
            entry = manifest_entry(settings["teacher"])
        except Exception as error:  # a clear message before any work starts
            problem = f"--teacher: {error}"
        else:
            if entry["config"].get("schedule") != "flow":
                problem = f"--teacher {settings['teacher']!r} is a diffusion model; reflow straightens a flow model, such as 'flow'"
    if problem is None and settings["init"]:
        try:
            init_entry = manifest_entry(settings["init"])
        except Exception as error:
            problem = f"--init: {error}"
        else:
            if init_entry["config"] != entry["config"]:
                problem = f"--init {settings['init']!r} must be a flow model of the teacher's architecture, such as 'reflow'"
    if problem:
        parser.error(problem)
    return Reflow(**settings)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run = parse_arguments(argv)
    train_reflow(run, "python -m tools.reflow " + shlex.join(argv))


if __name__ == "__main__":
    main()
