"""The denoiser and classifier: shapes, determinism, the "no context" input, and bad input."""

import copy
from dataclasses import asdict

import pytest
import torch

from shared.data import context_vector
from shared.model import (
    ClassifierConfig,
    Denoiser,
    DenoiserConfig,
    SpriteClassifier,
    StepwiseDenoiser,
    StepwiseDenoiserConfig,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = Denoiser()
    # Perturb every weight so zero-initialised layers do not hide wiring mistakes.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def inputs(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, 16, generator=g), torch.randint(1, 501, (batch,), generator=g)


def test_output_shape_and_size(model):
    x, t = inputs()
    assert model(x, t).shape == x.shape
    assert 1.0e6 < sum(p.numel() for p in model.parameters()) < 2.5e6


def test_eval_mode_is_deterministic(model):
    x, t = inputs()
    assert torch.equal(model(x, t), model(x, t))


def test_in_place_activations_leave_inputs_alone_and_gradients_right(model):
    x, t = inputs(1)
    context = context_vector(3)[None]
    before = (x.clone(), context.clone())
    model(x, t, context)
    assert torch.equal(x, before[0]) and torch.equal(context, before[1])
    double = copy.deepcopy(model).double()
    x64 = x.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda y: double(y, t, context.double()), (x64,), fast_mode=True)


def test_batch_rows_are_independent(model):
    x, t = inputs(6)
    together = model(x, t)
    alone = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_no_context_is_zero_rows_and_differs_from_a_group(model):
    x, t = inputs(3)
    none = model(x, t)
    zeros = model(x, t, torch.zeros(3, 9))
    one_hot = model(x, t, torch.eye(9)[[0, 3, 8]])
    assert torch.allclose(none, zeros)
    assert not torch.allclose(none, one_hot, atol=1e-3)
    mixed = torch.tensor([[0.5, 0, 0, 0.5, 0, 0, 0, 0, 0]] * 3)
    assert model(x, t, mixed).shape == x.shape
    # Dropping the context of one row (as in training) changes only that row.
    partly = torch.eye(9)[[0, 3, 8]]
    partly[1] = 0
    out = model(x, t, partly)
    assert torch.allclose(out[1], none[1], atol=1e-5) and torch.allclose(out[0], one_hot[0], atol=1e-5)


def test_timestep_changes_the_output(model):
    x, _ = inputs(2)
    assert not torch.allclose(model(x, torch.tensor([10, 10])), model(x, torch.tensor([400, 400])), atol=1e-3)


@pytest.mark.parametrize(
    "x, t, context, message",
    [
        (torch.randn(2, 3, 28, 28), torch.tensor([1, 2]), None, r"\(B, 3, 16, 16\)"),
        (torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), None, r"\(B, 3, 16, 16\)"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.tensor([1, 2]), None, "floating-point"),
        (torch.randn(2, 3, 16, 16), torch.tensor([0.5, 0.2]), None, "integer tensor of shape"),
        (torch.randn(2, 3, 16, 16), torch.tensor([1, 2, 3]), None, r"shape \(2,\)"),
        (torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.zeros(2, 5), r"\(2, 9\)"),
        (torch.randn(2, 3, 16, 16, device="meta"), torch.tensor([1, 2]), None, "model is on cpu"),
        (torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([1, 2]), None, r"dtype torch.float64 but the model's weights are torch.float32"),
        (torch.randn(2, 3, 16, 16), torch.tensor([1, 501]), None, r"t must lie in 0..500, got values from 1 to 501"),
        (torch.randn(2, 3, 16, 16), torch.tensor([-1, 2]), None, r"t must lie in 0..500"),
        (torch.randn(2, 3, 16, 16), torch.tensor([1, 2], device="meta"), None, r"t is on meta but x is on cpu"),
        (torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.eye(9, dtype=torch.long)[:2], r"context has dtype torch.int64 .*add .float\(\)"),
    ],
)
def test_bad_input_says_what_was_expected(model, x, t, context, message):
    with pytest.raises(ValueError, match=message):
        model(x, t, context)


def test_bad_config():
    with pytest.raises(ValueError, match="prediction must be one of"):
        DenoiserConfig(prediction="noise")


def test_stepwise_denoiser_sends_each_row_to_the_network_of_its_timestep():
    torch.manual_seed(1)
    stepwise = StepwiseDenoiser(StepwiseDenoiserConfig(base_channels=8, embed_dim=32, own_levels=(300, 40))).eval()
    with torch.no_grad():
        for p in stepwise.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, _ = inputs(5, seed=3)
    t = torch.tensor([300, 7, 40, 300, 500])
    context = torch.zeros(5, 9)
    context[1, 2] = 1
    own = {300: stepwise.own["300"], 40: stepwise.own["40"]}
    expected = torch.cat([own.get(int(level), stepwise.shared)(x[i : i + 1], t[i : i + 1], context[i : i + 1]) for i, level in enumerate(t)])
    assert torch.allclose(stepwise(x, t, context), expected, atol=1e-5)
    same = torch.full((5,), 40)
    assert torch.allclose(stepwise(x, same), own[40](x, same), atol=1e-6)
    assert not torch.allclose(own[40](x, same), stepwise.shared(x, same), atol=1e-3)
    assert stepwise.config.prediction == "eps" and asdict(stepwise.config)["own_levels"] == (300, 40)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        stepwise(torch.randn(2, 3, 8, 8), torch.tensor([300, 40]))
    with pytest.raises(ValueError, match="own_levels must be distinct timesteps in 1..500"):
        StepwiseDenoiserConfig(own_levels=(300, 300))
    with pytest.raises(ValueError, match="own_levels must be distinct timesteps in 1..500"):
        StepwiseDenoiserConfig(own_levels=(0,))


def test_classifier_shapes_and_noise_awareness():
    clean = SpriteClassifier().eval()
    x, t = inputs(5)
    assert clean(x).shape == (5, 9) and clean.features(x).shape == (5, 64)
    aware = SpriteClassifier(ClassifierConfig(noise_aware=True)).eval()
    assert aware(x, t).shape == (5, 9)
    with pytest.raises(ValueError, match="noise-aware"):
        aware(x)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        clean(torch.randn(5, 3, 8, 8))
    with pytest.raises(ValueError, match="t must lie in 0..500"):
        aware(x, t + 500)
    with pytest.raises(ValueError, match="dtype torch.float64"):
        clean(x.double())
