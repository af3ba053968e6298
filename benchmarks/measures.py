"""Measures only the benchmarks take, on top of shared.metrics (which the labs read).

- Near copies: the share of samples within a small pixel distance of a training sprite, to
  tell generation from recall.
- A balanced real floor: the real-vs-real Frechet distance when every group counts equally,
  the reference for guided samples asked for in equal numbers per group.
"""

from __future__ import annotations

import torch

from shared.data import GROUPS
from shared.metrics import SpriteMetrics, nearest_training_distance

# A sample whose root-mean-square pixel difference (pixels in [0, 1]) to its nearest training
# sprite is below this counts as a near copy: about 4 levels out of 255, too close to see.
NEAR_COPY_RMS = 0.015


def near_copies(metrics: SpriteMetrics, images: torch.Tensor, threshold: float = NEAR_COPY_RMS) -> dict:
    """Share of images within `threshold` RMS pixel distance of some training sprite, and the median distance."""
    distances = nearest_training_distance(images, metrics.train.images)
    return {"share": float((distances < threshold).float().mean()), "median_rms": float(distances.median())}


def balanced_real_floor(metrics: SpriteMetrics, n: int, seed: int = 0) -> float:
    """FD of n // 9 real training sprites of every group against the validation sprites, groups weighted equally."""
    per_group = max(1, n // len(GROUPS))
    members = [torch.nonzero(metrics.train.labels == g).flatten() for g in range(len(GROUPS))]
    if n < 2 or per_group > min(len(m) for m in members):
        raise ValueError(f"a balanced floor needs 2..{min(len(m) for m in members) * len(GROUPS)} sprites, got n = {n}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.cat([m[torch.randperm(len(m), generator=generator)[:per_group]] for m in members])
    return metrics.frechet(metrics.train.images[index], balanced=True)
