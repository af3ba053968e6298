"""Classifier-free and classifier guidance: the formulas, the batched pass, and use inside any sampler."""

import pytest
import torch

from shared.guidance import ClassifierFreeGuidance, ClassifierGuidance, log_prob_gradient
from shared.model import ClassifierConfig, Denoiser, DenoiserConfig, SpriteClassifier
from shared.samplers import generate
from shared.schedule import NoiseSchedule


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = Denoiser(DenoiserConfig(base_channels=8, embed_dim=16)).eval()
    for parameter in model.parameters():  # the zero-initialised layers would hide the context
        parameter.data.normal_(0, 0.05)
    return model


def contexts(n):
    return torch.nn.functional.one_hot(torch.arange(n) % 9, 9).float()


def test_classifier_free_guidance_formula_and_one_batched_call(tiny):
    x, t, c = torch.randn(3, 3, 16, 16), torch.tensor([400, 200, 20]), contexts(3)
    calls = []
    hook = tiny.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        guided = ClassifierFreeGuidance(tiny, 2.5)(x, t, c)
    finally:
        hook.remove()
    assert calls == [6], "both predictions come from one call on a doubled batch"
    with torch.no_grad():
        expected = 3.5 * tiny(x, t, c) - 2.5 * tiny(x, t, torch.zeros_like(c))
    assert torch.allclose(guided, expected, atol=1e-5)
    assert torch.allclose(ClassifierFreeGuidance(tiny, 0)(x, t, c), tiny(x, t, c))
    with pytest.raises(ValueError, match="needs contexts"):
        ClassifierFreeGuidance(tiny, 1.0)(x, t)
    for bad_scale in (-1.0, float("nan"), "3", None):
        with pytest.raises(ValueError, match="must be a number >= 0"):
            ClassifierFreeGuidance(tiny, bad_scale)


def test_classifier_gradient_matches_finite_differences():
    torch.manual_seed(1)
    classifier = SpriteClassifier(ClassifierConfig(noise_aware=True, width=16, feature_dim=16)).double().eval()
    x, t, y = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([50, 300]), torch.tensor([2, 7])
    with torch.inference_mode():  # as inside generate()
        gradient = log_prob_gradient(classifier, x, t, y)
    direction = torch.randn_like(x)
    h = 1e-5

    def log_p(z):
        return torch.log_softmax(classifier(z, t), 1)[torch.arange(2), y].sum()

    with torch.no_grad():
        numeric = (log_p(x + h * direction) - log_p(x - h * direction)) / (2 * h)
    assert abs(float((gradient * direction).sum()) - float(numeric)) < 1e-6 * max(1.0, abs(float(numeric)))


def test_classifier_guidance_pushes_towards_the_label_inside_a_sampler(tiny):
    torch.manual_seed(2)
    classifier = SpriteClassifier(ClassifierConfig(noise_aware=True, width=16, feature_dim=16)).eval()
    schedule = NoiseSchedule(500)
    labels = torch.tensor([1, 8])
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    plain = generate(tiny, "ddim", noise, 5, progress=False).images
    unguided = generate(ClassifierGuidance(tiny, classifier, labels, 0.0), "ddim", noise, 5, progress=False).images
    assert torch.allclose(plain, unguided)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([300, 300])
    with torch.no_grad():
        eps = tiny(x, t)
        guided = ClassifierGuidance(tiny, classifier, labels, 3.0)(x, t)
    gradient = log_prob_gradient(classifier, x, t, labels)
    assert torch.allclose(guided, eps - 3.0 * schedule.sqrt_one_minus_alpha_bars[300] * gradient, atol=1e-5)
    with pytest.raises(ValueError, match="noise-aware"):
        ClassifierGuidance(tiny, SpriteClassifier(), labels, 1.0)
    with pytest.raises(ValueError, match=r"group indices in 0..8, got values from 1 to 9"):
        ClassifierGuidance(tiny, classifier, torch.tensor([1, 9]), 1.0)
    with pytest.raises(ValueError, match="1-D integer tensor of group indices"):
        ClassifierGuidance(tiny, classifier, [1, 8], 1.0)
    with pytest.raises(ValueError, match="must be a number >= 0"):
        ClassifierGuidance(tiny, classifier, labels, -0.5)
