"""The straight path of flow matching (Lab 7): noise and data joined by a line.

    x_t = (1 - t) x0 + t eps,  t in [0, 1]      (t = 0 the sprite, t = 1 pure noise)
    u_t = d x_t / dt = eps - x0                 (the velocity along that line)

Flow matching (Lipman et al. 2023, eq. 23, sigma_min = 0) and rectified flow (Liu et al. 2023,
eq. 1) train v(x_t, t) to regress u_t, then sample by integrating dx/dt = v(x, t) from t = 1 to 0.
Time is continuous (t a float tensor); the path has a NoiseSchedule's methods, so the samplers
and the training loop take either.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_timesteps, describe


class StraightPath(nn.Module):
    """x_t = (1 - t) x0 + t eps for flow times t (B,) in [0, 1]."""

    kind = "flow"
    T = None  # continuous time: no integer steps

    @staticmethod
    def at_time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """t (B,) as (B, 1, 1, 1) (or the rank of `like`), to broadcast against images."""
        check_timesteps(t, None)
        return t.to(like.dtype).view(-1, *[1] * (like.ndim - 1))

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if x0.shape != noise.shape:
            raise ValueError(f"x0 and noise must have the same shape, got {tuple(x0.shape)} and {tuple(noise.shape)}")
        t = self.at_time(t, x0)
        return (1 - t) * x0 + t * noise

    def training_target(self, prediction: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity eps - x0, whatever t is: the path is straight."""
        if prediction != "velocity":
            raise ValueError(f"a flow model predicts the velocity, not {prediction!r}")
        return noise - x0

    def eps_and_x0(self, model_output: torch.Tensor, prediction: str, x_t: torch.Tensor, t: torch.Tensor):
        """(eps_hat, x0_hat) from a velocity v: x_t = x0 + t (eps - x0) gives x0 = x_t - t v and eps = x_t + (1 - t) v."""
        if not isinstance(model_output, torch.Tensor) or model_output.shape != x_t.shape:
            raise ValueError(f"the model's output must have the shape of x_t {tuple(x_t.shape)}, got {describe(model_output)}")
        t = self.at_time(t, x_t)
        return x_t + (1 - t) * model_output, x_t - t * model_output

    def extra_repr(self) -> str:
        return "x_t = (1 - t) x0 + t eps"


def straightness(velocities: torch.Tensor) -> torch.Tensor:
    """How far Euler paths on an even grid are from straight lines: S(Z) of Liu et al. 2023 (eq. 6), (B,).

    velocities (N, B, ...): each of N steps' velocity. Their mean is the path's displacement per
    unit time, so the mean squared deviation from it, per dimension, is 0 exactly for a straight path.
    """
    if not isinstance(velocities, torch.Tensor) or velocities.ndim < 3:
        raise ValueError(f"velocities must be stacked per step, (N, B, ...), got {describe(velocities)}")
    deviation = velocities - velocities.mean(dim=0, keepdim=True)
    return deviation.pow(2).flatten(2).mean(dim=(0, 2))
