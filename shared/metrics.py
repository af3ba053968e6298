"""The course's quality instrument: features from the shipped sprite classifier.

- Frechet distance (FD): the FID recipe of Heusel et al. 2017 between generated and held-out
  validation sprites, with our 64-feature classifier in place of Inception (which never saw a
  16x16 emoji). An FD means something only beside `real_floor`, the FD of as many real sprites.
- Class accuracy: how often a conditioned sample is classified in the group it was asked for.
- Distance to the nearest training sprite, to tell generation from recall.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import GROUPS, load_sprites
from .checks import describe


@torch.inference_mode()
def classifier_features(classifier, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """(N, 3, 16, 16) images in [-1, 1] -> (N, feature_dim) float64 features."""
    device = next(classifier.parameters()).device
    images = images.clamp(-1, 1)  # generated sprites may overshoot; real ones never do
    chunks = [classifier.features(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).double().numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray, weights_b: np.ndarray | None = None) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) between two feature sets (N, d).

    weights_b (optional, summing to 1) weighs the rows of features_b, for example so
    that every group of sprites counts equally.
    """
    for features in (features_a, features_b):
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"features must be (N, d) with N >= 2, got shape {features.shape}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sizes differ: {features_a.shape[1]} and {features_b.shape[1]}")
    mu_a, cov_a = features_a.mean(0), np.cov(features_a, rowvar=False)
    if weights_b is None:
        mu_b, cov_b = features_b.mean(0), np.cov(features_b, rowvar=False)
    else:
        mu_b = weights_b @ features_b
        centred = features_b - mu_b
        cov_b = (centred * weights_b[:, None]).T @ centred / (1 - (weights_b**2).sum())  # unbiased, like np.cov
    # Tr((S_a S_b)^1/2) through the symmetric S_a^1/2 S_b S_a^1/2, whose eigenvalues are
    # real and non-negative: stabler than a general matrix square root.
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(cross).sum())


class SpriteMetrics:
    """Reference features of the validation sprites, computed once, and the metrics that use them."""

    def __init__(self, classifier):
        self.classifier = classifier.eval()
        self.validation = load_sprites("validation")
        self.train = load_sprites("train")
        self.validation_features = classifier_features(classifier, self.validation.images)

    def frechet(self, images: torch.Tensor, balanced: bool = False) -> float:
        """FD between `images` and the held-out validation sprites; balanced=True weighs every group
        equally, the reference for samples asked for in equal numbers per group (People & Body is 59%)."""
        weights = None
        if balanced:
            counts = torch.bincount(self.validation.labels, minlength=len(GROUPS)).double()
            weights = (1 / (len(GROUPS) * counts))[self.validation.labels].numpy()
        return frechet_distance(classifier_features(self.classifier, images), self.validation_features, weights)

    def real_floor(self, n: int, seed: int = 0) -> float:
        """FD of n real training sprites against the validation sprites: what real data scores at this n.
        A reference, not a bound: like any draw of n real sprites, n samples can land a little below it."""
        if not 2 <= n <= len(self.train):
            raise ValueError(f"n must be in 2..{len(self.train)}, got {n}")
        index = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))[:n]
        return self.frechet(self.train.images[index])

    @torch.inference_mode()
    def class_accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Share of images the classifier puts in their asked-for group: overall, and per group present."""
        if len(images) != len(labels):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")
        labels = labels.cpu()  # the predictions come back to the CPU, and a GPU mask cannot index them
        device = next(self.classifier.parameters()).device
        predicted = torch.cat([self.classifier(images[i : i + 500].clamp(-1, 1).to(device)).argmax(1).cpu() for i in range(0, len(images), 500)])
        correct = predicted == labels
        per_group = {GROUPS[g]: float(correct[labels == g].float().mean()) for g in labels.unique().tolist()}
        return {"overall": float(correct.float().mean()), "per_group": per_group}


def nearest_training_distance(images: torch.Tensor, train_images: torch.Tensor) -> torch.Tensor:
    """For each image, the RMS pixel distance (pixels scaled to [0, 1]) to its nearest training image, (N,) on the CPU."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != train_images.shape[1:]:
        expected = ", ".join(map(str, train_images.shape[1:]))
        raise ValueError(f"images must have shape (N, {expected}) like the training sprites, got {describe(images)}")
    # In float64, which an Apple GPU lacks: so on the CPU.
    a = ((images.detach().cpu().clamp(-1, 1) + 1) / 2).flatten(1).double()
    b = ((train_images.detach().cpu() + 1) / 2).flatten(1).double()
    squared = (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)).clamp(min=0)  # (N, M)
    return (squared.min(dim=1).values / a.shape[1]).sqrt().float()
