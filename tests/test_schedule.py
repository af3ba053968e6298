"""The schedule's math, and the DDPM step against Ho et al.'s equations."""

import pytest
import torch

from shared.samplers import DDPMSampler
from shared.schedule import NoiseSchedule, make_betas


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_quantities(kind):
    s = NoiseSchedule(500, kind)
    assert s.betas.shape == (501,) and s.betas[0] == 0 and s.alpha_bars[0] == 1
    assert (s.betas[1:] > 0).all() and (s.betas <= 0.2 + 1e-6).all()
    assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all(), "alpha-bar strictly decreases"
    assert torch.allclose(s.alphas, 1 - s.betas)
    assert torch.allclose(s.alpha_bars, torch.cumprod(s.alphas, 0), rtol=1e-5)
    assert torch.allclose(s.sqrt_alpha_bars**2 + s.sqrt_one_minus_alpha_bars**2, torch.ones(501), atol=1e-6)
    s64 = NoiseSchedule(500, kind, dtype=torch.float64)
    t = torch.arange(2, 501)
    expected = s64.betas[t] * (1 - s64.alpha_bars[t - 1]) / (1 - s64.alpha_bars[t])
    assert torch.allclose(s64.posterior_variance[t], expected, rtol=1e-12)
    assert torch.allclose(s.posterior_variance, s64.posterior_variance.float(), rtol=1e-6)
    assert s.posterior_variance[1] == 0


def test_cosine_reaches_pure_noise_and_linear_does_not():
    cosine = NoiseSchedule(500, "cosine")
    assert cosine.alpha_bars[-1] < 2e-4
    # No DDPM step may amplify an error in the predicted noise much: sqrt(beta / alpha) <= 0.5.
    assert ((cosine.betas / cosine.alphas).sqrt() <= 0.5 + 1e-6).all()
    assert NoiseSchedule(500, "linear").alpha_bars[-1] == pytest.approx(0.0066, abs=5e-4)


def test_add_noise_and_predict_x0_invert_each_other():
    s = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1, torch.randn(8, 3, 16, 16, generator=g)
    t = torch.tensor([1, 2, 10, 100, 250, 400, 480, 499])
    x_t = s.add_noise(x0, t, noise)
    assert torch.allclose(s.predict_x0(x_t, t, noise), x0, atol=1e-3)
    assert torch.allclose(s.predict_eps(x_t, t, x0), noise, atol=1e-4)
    # The forward process keeps unit variance for unit-variance data.
    big = s.add_noise(torch.randn(4000, 3, 16, 16, generator=g), torch.full((4000,), 250), torch.randn(4000, 3, 16, 16, generator=g))
    assert big.var().item() == pytest.approx(1.0, abs=0.01)


def test_bad_timesteps_and_kinds():
    s = NoiseSchedule()
    with pytest.raises(ValueError, match="0..500"):
        s.at("betas", torch.tensor([501]))
    with pytest.raises(ValueError, match="integer tensor"):
        s.at("betas", torch.tensor([1.5]))
    with pytest.raises(ValueError, match="expected one of"):
        make_betas(500, "quadratic")
    with pytest.raises(ValueError, match=r"got 2 images but 3 timesteps; t must have shape \(2,\)"):
        s.predict_x0(torch.zeros(2, 3, 16, 16), torch.tensor([1, 2, 3]), torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="got 4 images but 2 timesteps"):
        s.add_noise(torch.zeros(4, 3, 16, 16), torch.tensor([1, 2]), torch.zeros(4, 3, 16, 16))
    one_timestep_for_all = s.predict_eps(torch.ones(4, 3, 16, 16), torch.tensor([7]), torch.zeros(4, 3, 16, 16))
    assert one_timestep_for_all.shape == (4, 3, 16, 16)
    one_image_at_many_timesteps = s.add_noise(torch.ones(1, 3, 16, 16), torch.tensor([0, 250, 500]), torch.zeros(1, 3, 16, 16))
    assert one_image_at_many_timesteps.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match=r"T must be an integer >= 2, got tensor of shape \(3,\)"):
        make_betas(torch.zeros(3))


def test_ddpm_step_equals_ho_et_al_equation_11():
    s = NoiseSchedule()
    sampler = DDPMSampler(s)
    g = torch.Generator().manual_seed(1)
    x_t, eps, z = (torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(3))
    s64 = NoiseSchedule(dtype=torch.float64)
    sampler64 = DDPMSampler(s64)
    for t in (500, 300, 20, 2):
        x_prev, _ = sampler64.step(eps, t, t - 1, x_t, z)
        mean = (x_t - s64.betas[t] / s64.sqrt_one_minus_alpha_bars[t] * eps) / s64.alphas[t].sqrt()
        assert torch.allclose(x_prev, mean + s64.posterior_variance[t].sqrt() * z, atol=1e-8)
    last, x0_hat = sampler.step(eps.float(), 1, 0, x_t.float())
    assert torch.allclose(last, x0_hat, atol=1e-5), "the last step returns x0_hat without noise"
    # A longer step (t -> t') uses alpha = abar_t / abar_t' in the same formulas.
    long_step, _ = sampler64.step(eps, 300, 280, x_t, torch.zeros_like(z))
    posterior_mean = (s64.alpha_bars[280].sqrt() * (1 - s64.alpha_bars[300] / s64.alpha_bars[280]) * s64.predict_x0(x_t, torch.full((4,), 300), eps)
                      + (s64.alpha_bars[300] / s64.alpha_bars[280]).sqrt() * (1 - s64.alpha_bars[280]) * x_t) / (1 - s64.alpha_bars[300])
    assert torch.allclose(long_step, posterior_mean, atol=1e-8)


def test_ddpm_timesteps_grid():
    sampler = DDPMSampler(NoiseSchedule())
    grid = sampler.timesteps()
    assert grid[0] == (500, 499) and grid[-1] == (1, 0) and len(grid) == 500
    short = sampler.timesteps(10)
    assert short[0][0] == 500 and short[-1][1] == 0 and len(short) == 10
    with pytest.raises(ValueError, match="1..500"):
        sampler.timesteps(0)


def test_schedule_broadcasts_against_points_as_well_as_images():
    schedule = NoiseSchedule(100, "cosine", dtype=torch.float64)
    points, noise = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor([1, 20, 50, 80, 100])
    x_t = schedule.add_noise(points, t, noise)
    abar = schedule.alpha_bars[t][:, None]
    assert x_t.shape == (5, 2)
    assert torch.allclose(x_t, abar.sqrt() * points + (1 - abar).sqrt() * noise)
    assert torch.allclose(schedule.predict_x0(x_t, t, noise), points)
    # the DDPM step works on points too (Lab 2's warm-up samples 2-D points with it)
    x_prev, x0_hat = DDPMSampler(schedule).step(noise, 50, 49, x_t, torch.zeros_like(x_t))
    assert x_prev.shape == (5, 2) and x0_hat.shape == (5, 2)
