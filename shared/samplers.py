"""Samplers: turning noise into sprites, one reverse step at a time.

Every sampler has the same two methods, in the spirit of diffusers' schedulers:
  timesteps(n_steps) -> [(t, t_prev), ...], the grid from T down to 0;
  step(model_output, t, t_prev, x_t, noise) -> (x_prev, x0_hat).
The network stays outside, so `generate` runs any sampler with any denoiser,
and randomness comes in as arguments: `noise` for the step, a generator for
the loop, so the same seed gives the same sprites.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .data import check_contexts
from .schedule import NoiseSchedule


def split_prediction(model_output, prediction, schedule, x_t, t):
    """(eps_hat, x0_hat) from whatever the network predicts ("eps" or "x0"), at integer timesteps t (B,)."""
    if prediction == "eps":
        return model_output, schedule.predict_x0(x_t, t, model_output)
    if prediction == "x0":
        return schedule.predict_eps(x_t, t, model_output), model_output
    raise ValueError(f"prediction must be 'eps' or 'x0', got {prediction!r}")


class DDPMSampler:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2), optionally on a shorter grid of timesteps.

    One step draws x_{t'} from q(x_{t'} | x_t, x0_hat), the Gaussian posterior of
    the forward process (Ho et al. eq. 6-7) with x0 replaced by the network's
    estimate. For consecutive steps (t' = t - 1) its mean equals eq. 11,
        1/sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - abar_t) * eps_hat),
    and its variance is beta-tilde_t. For t' < t - 1 it is the same formula with
    alpha replaced by abar_t / abar_t' (Nichol & Dhariwal 2021, sec. 4).
    """

    name = "ddpm"
    deterministic = False

    def __init__(self, schedule: NoiseSchedule, clip_x0: bool = False):
        self.schedule, self.clip_x0 = schedule, clip_x0

    def timesteps(self, n_steps: int | None = None) -> list[tuple[int, int]]:
        """Pairs (t, t_prev) from T down to 0, n_steps of them, evenly spaced (all T by default)."""
        T = self.schedule.T
        n_steps = T if n_steps is None else n_steps
        if not isinstance(n_steps, int) or not 1 <= n_steps <= T:
            raise ValueError(f"n_steps must be an integer in 1..{T}, got {n_steps!r}")
        grid = torch.linspace(T, 0, n_steps + 1).round().long().tolist()
        return list(zip(grid[:-1], grid[1:]))

    def step(self, model_output, t: int, t_prev: int, x_t, noise=None, prediction: str = "eps"):
        """x_t -> (x_{t_prev}, x0_hat); `noise` ~ N(0, I) like x_t, unused when t_prev = 0."""
        if not 0 <= t_prev < t <= self.schedule.T:
            raise ValueError(f"need 0 <= t_prev < t <= {self.schedule.T}, got t={t}, t_prev={t_prev}")
        batch = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        _, x0_hat = split_prediction(model_output, prediction, self.schedule, x_t, batch)
        if self.clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
        s = self.schedule
        # Stored 1 - abar and alpha_t are more precise in float32 than differences and ratios.
        abar_prev, noise_t, noise_prev = s.alpha_bars[t_prev], s.one_minus_alpha_bars[t], s.one_minus_alpha_bars[t_prev]
        if t_prev == t - 1:
            alpha_step, beta_step, variance = s.alphas[t], s.betas[t], s.posterior_variance[t]
        else:
            alpha_step = s.alpha_bars[t] / abar_prev
            beta_step = 1 - alpha_step
            variance = beta_step * noise_prev / noise_t  # beta-tilde for the longer step
        mean = (abar_prev.sqrt() * beta_step / noise_t) * x0_hat + (alpha_step.sqrt() * noise_prev / noise_t) * x_t
        if t_prev == 0:
            return mean, x0_hat  # the last step adds no noise: x_0 is the answer
        if noise is None or noise.shape != x_t.shape:
            raise ValueError(f"the DDPM step needs fresh noise shaped like x_t {tuple(x_t.shape)}, got {getattr(noise, 'shape', None)}")
        return mean + variance.sqrt() * noise, x0_hat


SAMPLERS = {"ddpm": DDPMSampler}


def make_sampler(name: str, schedule: NoiseSchedule) -> DDPMSampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](schedule)


@dataclass
class SampleRun:
    images: torch.Tensor  # (N, 3, 16, 16) final samples in [-1, 1] (not clipped)
    frames: list[torch.Tensor]  # x_t at the kept steps, each (N, 3, 16, 16), from noise to the end
    x0_frames: list[torch.Tensor]  # the network's x0_hat at those same steps
    frame_timesteps: list[int]  # t of each kept frame


@torch.inference_mode()
def generate(
    model,
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    sampler: str | DDPMSampler = "ddpm",
    n_steps: int | None = None,
    contexts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    n_frames: int = 0,
    progress: bool = True,
) -> SampleRun:
    """Run a sampler from `noise` (B, 3, 16, 16) to sprites.

    contexts: (B, 9) mixtures, zero rows for "no context", or None (all unconditional).
    generator: CPU generator for the fresh noise of stochastic samplers (drawn on
    the CPU, then moved, so a seed gives the same sprites on every device).
    n_frames: keep about this many evenly spaced x_t and x0_hat for animations.
    """
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, schedule)
    device = next(model.parameters()).device
    if noise.ndim != 4:
        raise ValueError(f"noise must be a batch of images (B, 3, 16, 16), got shape {tuple(noise.shape)}")
    x = noise.to(device)
    if contexts is not None:
        contexts = check_contexts(contexts, x.shape[0]).to(device)
    grid = sampler.timesteps(n_steps)
    keep = set(torch.linspace(0, len(grid) - 1, n_frames).round().long().tolist()) if n_frames else set()
    frames, x0_frames, frame_timesteps = [], [], []
    prediction = model.config.prediction
    for i, (t, t_prev) in enumerate(tqdm(grid, desc=f"{sampler.name} sampling", disable=not progress, leave=False)):
        batch_t = torch.full((x.shape[0],), t, dtype=torch.long, device=device)
        output = model(x, batch_t, contexts)
        fresh = None
        if not sampler.deterministic and t_prev > 0:
            fresh = torch.randn(x.shape, generator=generator).to(device)
        x_prev, x0_hat = sampler.step(output, t, t_prev, x, fresh, prediction=prediction)
        if i in keep:
            frames.append(x.cpu())
            x0_frames.append(x0_hat.cpu())
            frame_timesteps.append(t)
        x = x_prev
    if n_frames:
        frames.append(x.cpu())
        x0_frames.append(x.cpu())
        frame_timesteps.append(0)
    return SampleRun(x.cpu(), frames, x0_frames, frame_timesteps)
