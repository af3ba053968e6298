"""The noise schedule: beta, alpha and alpha-bar for t = 0..T, built once.

Index t is the paper's t (Ho et al. 2020): t = 0 is the clean image, t = T pure
noise, so every tensor has T + 1 entries and code reads beside the paper.

Why cosine by default: with T = 500, the linear schedule of Ho et al. (beta from
1e-4 to 0.02) ends at alpha-bar_T = 0.0064, so x_T still holds 8% of the image
while sampling starts from pure noise, and its signal-to-noise ratio collapses
early, leaving the last hundred steps with almost nothing to do. The cosine
schedule (Nichol & Dhariwal 2021, eq. 17) was designed so that alpha-bar falls
almost linearly through the middle of the chain and changes little at either
end: the log signal-to-noise ratio falls at a steady rate from about t = 50 to
t = 450 and steeply only in the first and last few dozen steps, which suits
sprites whose coarse shape is decided by a few pixels.

Why beta is clipped at 0.2 (Nichol & Dhariwal clip at 0.999): the DDPM step
(Ho et al. eq. 11) divides by sqrt(alpha_t) = sqrt(1 - beta_t), so a final beta
of 0.999 multiplies any error in the predicted noise by 31.6 and the samples
blow up unless x0 is clipped. At 0.2 the clip touches only the last 9 of 500
steps, where x_t is pure noise anyway (alpha-bar_491 = 0.0008), no step
amplifies errors by more than 0.5, and alpha-bar_T = 1e-4 still leaves only 1%
of the image in x_T.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULE_KINDS = ("cosine", "linear")
MAX_BETA = 0.2  # see the module docstring


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
    """Every quantity the forward process and the samplers need, as buffers.

    Buffers travel with .to(device) and are indexed by integer timesteps t of
    shape (B,), giving (B,) values; `at(name, t)` reshapes them to (B, 1, 1, 1)
    so they broadcast against images (`ndim` picks another rank, such as
    (B, 1) for the 2-D points of Lab 2's warm-up).
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
        t = self.check_timesteps(t)
        return getattr(self, name)[t].view(-1, *[1] * (ndim - 1))

    def check_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32) or t.ndim != 1:
            raise ValueError(f"timesteps must be a 1-D integer tensor of shape (B,), got {describe(t)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.T):
            raise ValueError(f"timesteps must lie in 0..{self.T}, got values from {int(t.min())} to {int(t.max())}")
        return t.to(self.betas.device).long()

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

    def extra_repr(self) -> str:
        return f"T={self.T}, kind={self.kind!r}"


def describe(value) -> str:
    """Short description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
    return f"{type(value).__name__} {value!r}"
