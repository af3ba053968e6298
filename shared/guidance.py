"""Guidance: steering a denoiser towards a group, as wrappers that any sampler can run.

Each wrapper looks like a denoiser (same call, `config` and `schedule`), so `generate` takes it as one.
- Classifier-free guidance (Ho & Salimans 2022) contrasts the conditional and unconditional
  predictions of one network trained with context dropout, both from one call on a doubled batch:
      eps = (1 + w) eps(x_t, c) - w eps(x_t, no context).
- Classifier guidance (Dhariwal & Nichol 2021) follows a noise-aware classifier's gradient:
      eps = eps(x_t) - s sqrt(1 - abar_t) grad_x log p(y | x_t, t).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .data import GROUPS, check_contexts
from .checks import describe


class ClassifierFreeGuidance(nn.Module):
    """A context model guided with scale w >= 0 (w = 0: the plain conditional model)."""

    def __init__(self, model: nn.Module, scale: float):
        super().__init__()
        self.model, self.scale = model, guidance_scale(scale)
        self.config, self.schedule = model.config, model.schedule

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            raise ValueError("classifier-free guidance needs contexts (B, 9): which groups to steer towards")
        check_contexts(context, x.shape[0])
        if self.scale == 0:
            return self.model(x, t, context)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([context, torch.zeros_like(context)]))
        conditional, unconditional = both.chunk(2)
        return (1 + self.scale) * conditional - self.scale * unconditional


class ClassifierGuidance(nn.Module):
    """A denoiser guided by a noise-aware classifier towards `labels` (B,), with scale s >= 0."""

    def __init__(self, model: nn.Module, classifier: nn.Module, labels: torch.Tensor, scale: float):
        super().__init__()
        if not getattr(classifier.config, "noise_aware", False):
            raise ValueError("classifier guidance needs a noise-aware classifier (one that takes t), such as 'guidance_classifier'")
        if model.config.prediction != "eps":
            raise ValueError("classifier guidance here corrects a noise prediction: the model must predict eps")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
            raise ValueError(f"labels must be a 1-D integer tensor of group indices (B,), got {describe(labels)}")
        n_classes = getattr(classifier.config, "n_classes", len(GROUPS))
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise ValueError(f"labels must be group indices in 0..{n_classes - 1}, got values from {int(labels.min())} to {int(labels.max())}")
        self.model, self.classifier, self.schedule, self.scale = model, classifier, model.schedule, guidance_scale(scale)
        self.register_buffer("labels", labels.long(), persistent=False)
        self.config = model.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[0] != self.labels.shape[0]:
            raise ValueError(f"got {x.shape[0]} images but {self.labels.shape[0]} labels to guide towards")
        eps = self.model(x, t, context)
        if self.scale == 0:
            return eps
        gradient = log_prob_gradient(self.classifier, x, t, self.labels)
        return eps - self.scale * self.schedule.at("sqrt_one_minus_alpha_bars", t) * gradient


def log_prob_gradient(classifier: nn.Module, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """grad_x log p(labels | x_t, t) for each image, by autograd; works inside torch.inference_mode."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x_t.detach().clone().requires_grad_(True)  # a normal tensor, even if x_t was made in inference mode
        log_p = F.log_softmax(classifier(x, t.clone()), dim=1)
        chosen = log_p[torch.arange(len(labels), device=x.device), labels.to(x.device)].sum()  # images are independent
        (gradient,) = torch.autograd.grad(chosen, x)
    return gradient


def guidance_scale(scale) -> float:
    """The scale as a float; a guidance scale must be a number >= 0."""
    is_number = isinstance(scale, numbers.Real) or (isinstance(scale, torch.Tensor) and scale.numel() == 1)
    value = float(scale) if is_number else float("nan")
    if not value >= 0:  # NaN fails this too
        raise ValueError(f"the guidance scale must be a number >= 0, got {scale!r}")
    return value
