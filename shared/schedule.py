"""The noise schedule: beta, alpha and alpha-bar for t = 0..T, built once, and the conversions
between the three things a network may predict (eps, x0, v).

Index t is the paper's t (Ho et al. 2020): 0 is the clean image, T pure noise, so every tensor has
T + 1 entries. The default is the cosine schedule (Nichol & Dhariwal 2021, eq. 17), beta clipped at
0.2 (docs/design.md says why).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_timesteps, describe

SCHEDULE_KINDS = ("cosine", "linear")
MAX_BETA = 0.2  # Nichol & Dhariwal clip at 0.999; the DDPM step divides by sqrt(1 - beta_t)


def make_betas(T: int = 500, kind: str = "cosine") -> torch.Tensor:
    """beta_t for t = 0..T in float64, with beta_0 = 0 so that alpha-bar_0 = 1."""
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T must be an integer >= 2, got {describe(T)}")
    if kind == "linear":
        # Ho et al. 2020, section 4: beta from 1e-4 to 0.02 (their T was 1000).
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    elif kind == "cosine":
        offset = 0.008  # keeps beta_1 from being vanishingly small (Nichol & Dhariwal, sec. 3.2)
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        alpha_bars = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
        alpha_bars = alpha_bars / alpha_bars[0]
        betas = (1 - alpha_bars[1:] / alpha_bars[:-1]).clamp(max=MAX_BETA)
    else:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {SCHEDULE_KINDS}")
    return torch.cat([torch.zeros(1, dtype=torch.float64), betas])


class NoiseSchedule(nn.Module):
    """Every quantity the forward process and the samplers need, as buffers indexed by integer t (B,).

    `at(name, t)` gives them as (B, 1, 1, 1) to broadcast against images (`ndim` picks another
    rank, such as (B, 1) for Lab 2's 2-D points).
    """

    def __init__(self, T: int = 500, kind: str = "cosine", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.T, self.kind = T, kind
        betas = make_betas(T, kind)
        alphas = 1 - betas
        alpha_bars = torch.cumprod(alphas, dim=0)
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        # Variance of q(x_{t-1} | x_t, x_0), Ho et al. eq. 7; 0 at t = 1 where x_0 is known.
        posterior_variance = torch.zeros_like(betas)
        posterior_variance[1:] = betas[1:] * (1 - alpha_bars_prev[1:]) / (1 - alpha_bars[1:])
        quantities = {
            "betas": betas,  # beta_t
            "alphas": alphas,  # alpha_t = 1 - beta_t
            "alpha_bars": alpha_bars,  # alpha-bar_t = prod_{s<=t} alpha_s
            "sqrt_alpha_bars": alpha_bars.sqrt(),  # sqrt(alpha-bar_t): how much image is left
            "one_minus_alpha_bars": 1 - alpha_bars,  # 1 - alpha-bar_t, kept because float32 loses it near t = 0
            "sqrt_one_minus_alpha_bars": (1 - alpha_bars).sqrt(),  # sqrt(1 - alpha-bar_t): noise level
            "posterior_variance": posterior_variance,  # beta-tilde_t
        }
        for name, value in quantities.items():
            # Computed in float64, stored in the model's dtype (float64 for checking formulas).
            self.register_buffer(name, value.to(dtype), persistent=False)

    def quantities(self) -> dict[str, torch.Tensor]:
        """The (T+1,) tensors a DDPM step needs, by name: betas, alphas, alpha_bars, posterior_variance."""
        return {name: getattr(self, name) for name in ("betas", "alphas", "alpha_bars", "posterior_variance")}

    def at(self, name: str, t: torch.Tensor, ndim: int = 4) -> torch.Tensor:
        """Gather quantity `name` at integer timesteps t (B,) as (B, 1, 1, 1), or (B,) + (1,) * (ndim - 1)."""
        t = check_timesteps(t, self.T).to(self.betas.device).long()
        return getattr(self, name)[t].view(-1, *[1] * (ndim - 1))

    def check_batch(self, x: torch.Tensor, t: torch.Tensor) -> None:
        """One timestep per image in x; or one timestep for all images, or one image at many timesteps."""
        if isinstance(t, torch.Tensor) and t.ndim == 1 and 1 not in (t.shape[0], x.shape[0]) and t.shape[0] != x.shape[0]:
            raise ValueError(f"got {x.shape[0]} images but {t.shape[0]} timesteps; t must have shape ({x.shape[0]},)")

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with the given noise (eq. 4)."""
        if x0.shape != noise.shape:
            raise ValueError(f"x0 and noise must have the same shape, got {tuple(x0.shape)} and {tuple(noise.shape)}")
        self.check_batch(x0, t)
        return self.at("sqrt_alpha_bars", t, x0.ndim) * x0 + self.at("sqrt_one_minus_alpha_bars", t, x0.ndim) * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert eq. 4 for x_0 given a noise estimate (Ho et al. eq. 15)."""
        self.check_batch(x_t, t)
        return (x_t - self.at("sqrt_one_minus_alpha_bars", t, x_t.ndim) * eps) / self.at("sqrt_alpha_bars", t, x_t.ndim)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise that takes x0 to x_t; safe at every t < T since sqrt(1 - abar_t) > 0 for t >= 1."""
        self.check_batch(x_t, t)
        return (x_t - self.at("sqrt_alpha_bars", t, x_t.ndim) * x0) / self.at("sqrt_one_minus_alpha_bars", t, x_t.ndim)

    def eps_and_x0(self, model_output: torch.Tensor, prediction: str, x_t: torch.Tensor, t: torch.Tensor):
        """(eps_hat, x0_hat) from what a network predicts ("eps", "x0" or "v") at integer timesteps t (B,).

        v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022; alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t))
        inverts without dividing, since alpha^2 + sigma^2 = 1: x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v.
        """
        if not isinstance(model_output, torch.Tensor) or model_output.shape != x_t.shape:
            raise ValueError(f"the model's output must have the shape of x_t {tuple(x_t.shape)}, got {describe(model_output)}")
        if prediction == "eps":
            return model_output, self.predict_x0(x_t, t, model_output)
        if prediction == "x0":
            return self.predict_eps(x_t, t, model_output), model_output
        if prediction == "v":
            alpha, sigma = self.at("sqrt_alpha_bars", t, x_t.ndim), self.at("sqrt_one_minus_alpha_bars", t, x_t.ndim)
            return sigma * x_t + alpha * model_output, alpha * x_t - sigma * model_output
        raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {prediction!r}")

    def training_target(self, prediction: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What a network predicting `prediction` should output for x_t = add_noise(x0, t, noise)."""
        if prediction == "v":
            return self.at("sqrt_alpha_bars", t, x0.ndim) * noise - self.at("sqrt_one_minus_alpha_bars", t, x0.ndim) * x0
        if prediction not in ("eps", "x0"):
            raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {prediction!r}")
        return noise if prediction == "eps" else x0

    def extra_repr(self) -> str:
        return f"T={self.T}, kind={self.kind!r}"

