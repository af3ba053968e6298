"""The quality instrument: Frechet distance, its floor, class accuracy and near copies."""

import numpy as np
import pytest
import torch

from benchmarks.measures import balanced_real_floor, near_copies
from shared.metrics import SpriteMetrics, frechet_distance, nearest_training_distance
from shared.weights import load_model


@pytest.fixture(scope="module")
def metrics():
    return SpriteMetrics(load_model("classifier"))


def test_frechet_distance_of_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * 2 + 1
    # |mu|^2 = 3, traces 3 + 12, cross term 2 * Tr((I * 4I)^1/2) = 2 * 6
    assert frechet_distance(a, b) == pytest.approx(3 + 3 + 12 - 12, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(a, b[:, :2])


def test_real_sprites_sit_near_the_floor_and_noise_is_far(metrics):
    floor = metrics.real_floor(500, seed=0)
    other_real = metrics.real_floor(500, seed=1)
    noise = metrics.frechet(torch.randn(500, 3, 16, 16).clamp(-1, 1))
    blank = metrics.frechet(torch.ones(500, 3, 16, 16))
    assert other_real < 1.5 * floor
    assert noise > 10 * floor and blank > 10 * floor


def test_class_accuracy_of_real_validation_sprites(metrics):
    result = metrics.class_accuracy(metrics.validation.images, metrics.validation.labels)
    assert result["overall"] > 0.6
    assert set(result["per_group"]) == {
        "Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
        "Activities", "Objects", "Symbols", "Flags",
    }


def test_near_copies(metrics):
    copies = near_copies(metrics, metrics.train.images[:50])
    assert copies["share"] == 1.0 and copies["median_rms"] < 1e-6
    assert near_copies(metrics, torch.randn(50, 3, 16, 16))["share"] == 0
    assert torch.all(nearest_training_distance(metrics.train.images[:3], metrics.train.images) < 1e-6)
    channels_last = metrics.train.images[:3].permute(0, 2, 3, 1)  # same pixel count, wrong layout
    with pytest.raises(ValueError, match=r"shape \(N, 3, 16, 16\) like the training sprites"):
        near_copies(metrics, channels_last)


def test_balanced_real_floor_is_repeatable_and_checks_its_size(metrics):
    floor = balanced_real_floor(metrics, 450, seed=0)
    assert floor == balanced_real_floor(metrics, 450, seed=0) != balanced_real_floor(metrics, 450, seed=1)
    assert floor > 0
    with pytest.raises(ValueError, match="a balanced floor needs"):
        balanced_real_floor(metrics, len(metrics.train))


def test_weighted_frechet_distance_equals_the_unweighted_one_with_equal_weights():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 4)), rng.normal(1.0, 2.0, size=(200, 4))
    assert abs(frechet_distance(a, b, np.full(200, 1 / 200)) - frechet_distance(a, b)) < 1e-9
    # weights that double the first half match repeating the first half
    weights = np.r_[np.full(100, 2.0), np.full(100, 1.0)]
    repeated = np.r_[b[:100], b[:100], b[100:]]
    assert abs(frechet_distance(a, b, weights / weights.sum()) - frechet_distance(a, repeated)) < 0.05
