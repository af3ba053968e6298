"""Distillation targets (Lab 6): what a few-step student learns to match, and how it samples.

A student is a copy of its teacher that predicts v, not the noise: a noise prediction becomes a
sprite by dividing by sqrt(abar_t), 0.01 at t = T, a hundredfold blow-up of a one-step student's
errors (Salimans & Ho 2022, sec. 4). It samples with deterministic DDIM on its own grid, saved
under "sampling" in its manifest entry. `python -m tools.distill` trains them.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from .model import Denoiser, DenoiserConfig, StepwiseDenoiser
from .samplers import DDIMSampler
from .schedule import NoiseSchedule


def student_sampler(entry: dict, schedule: NoiseSchedule) -> DDIMSampler:
    """The sampler a distilled student was trained for: deterministic DDIM on its own grid, no clipping."""
    sampling = entry.get("sampling")
    if sampling is None:
        raise ValueError("these weights are not a distilled student (no 'sampling' in their manifest entry)")
    return DDIMSampler(schedule, clip_x0=sampling["clip_x0"], levels=sampling["levels"])


def make_student(teacher: Denoiser | StepwiseDenoiser) -> Denoiser:
    """A copy of the teacher (of its shared network, if it has copies of its own for some steps) that predicts v."""
    source = teacher.shared if isinstance(teacher, StepwiseDenoiser) else teacher
    config = DenoiserConfig(**{**asdict(source.config), "prediction": "v"})
    student = Denoiser(config).to(next(source.parameters()).device)
    student.load_state_dict(source.state_dict())
    return student.train()


def sigma_alpha(schedule: NoiseSchedule, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_t, alpha_t) = (sqrt(1 - abar_t), sqrt(abar_t)) at one integer timestep."""
    return schedule.sqrt_one_minus_alpha_bars[t], schedule.sqrt_alpha_bars[t]


def ddim_x0_target(schedule: NoiseSchedule, x_t: torch.Tensor, t: int, x_target: torch.Tensor, t_target: int) -> torch.Tensor:
    """The x0 that makes one deterministic DDIM step from (x_t, t) land exactly on x_target at t_target.

    One DDIM step is x_t' = alpha' x0 + sigma' (x_t - alpha x0) / sigma; solved for x0 (Salimans & Ho, Algorithm 2).
    """
    if t_target == 0:
        return x_target
    (sigma, alpha), (sigma_next, alpha_next) = sigma_alpha(schedule, t), sigma_alpha(schedule, t_target)
    ratio = sigma_next / sigma
    return (x_target - ratio * x_t) / (alpha_next - ratio * alpha)


@torch.no_grad()
def run_teacher(teacher, sampler, levels: list[int], x: torch.Tensor) -> torch.Tensor:
    """The teacher's deterministic path from x at levels[0] through each of `levels` in turn."""
    sampler.restart()  # a multistep solver starts each segment afresh
    for t, t_next in zip(levels[:-1], levels[1:]):
        output = teacher(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        x, _ = sampler.step(output, t, t_next, x, prediction=teacher.config.prediction)
    return x
