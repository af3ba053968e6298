"""The course's samplers, step by step, against diffusers' schedulers (a test-time dependency only).

Aligning the two takes four settings, each a diffusers default that differs from ours:
- betas: ours are the paper's beta_1..beta_T (index 0 is the clean image), so
  diffusers gets `trained_betas = betas[1:]` and its timestep k is our t = k + 1;
  its "final alpha" of 1 (set_alpha_to_one) is our alpha-bar_0 = 1;
- spacing: our even grid linspace(T, 0) always starts at t = T, which is diffusers'
  "trailing" spacing (its default "leading" starts below T); our deterministic
  samplers default to a log-SNR grid, so these tests ask for spacing="time";
- clipping: diffusers' DDIM clips x0_hat to [-1, 1] by default, and so do our
  DDIM and DPM-Solver; the formulas are compared with clipping off on both sides;
- diffusers keeps its alpha-bars in float32, so the model outputs below keep x
  in the range a real model keeps it in (a clean sprite plus noise); random
  outputs would let x grow to hundreds, where float32 rounding alone exceeds 1e-4.
"""

import pytest
import torch

import diffusers  # installed by `make test` (requirements-test.txt)

from shared.samplers import DDIMSampler, DDPMSampler, DPMSolverSampler, UniPCSampler  # noqa: E402
from shared.schedule import NoiseSchedule  # noqa: E402

T = 500


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(T, "cosine", dtype=torch.float64)


def diffusers_scheduler(cls, schedule, n_steps, **settings):
    scheduler = cls(num_train_timesteps=T, trained_betas=schedule.betas[1:].numpy(), timestep_spacing="trailing", **settings)
    scheduler.set_timesteps(n_steps)
    return scheduler


class FakeModel:
    """A noise prediction consistent with one fixed 'clean sprite', plus a different error at every call."""

    def __init__(self, schedule, seed):
        self.schedule, self.generator = schedule, torch.Generator().manual_seed(seed)
        self.x0 = torch.rand(2, 3, 16, 16, generator=self.generator, dtype=torch.float64) * 2 - 1

    def __call__(self, x, t):
        batch = torch.full((x.shape[0],), t)
        error = 0.1 * torch.randn(x.shape, generator=self.generator, dtype=torch.float64)
        return self.schedule.predict_eps(x, batch, self.x0) + error


def test_grids_match_diffusers_trailing_spacing(schedule):
    for n_steps in (10, 25, 50, 500):
        ours = [t - 1 for t, _ in DDIMSampler(schedule, spacing="time").timesteps(n_steps)]
        assert ours == diffusers_scheduler(diffusers.DDIMScheduler, schedule, n_steps).timesteps.tolist()


def assert_deterministic_steps_match(ours, theirs, schedule, n_steps, seed, name):
    """Run ours and diffusers' scheduler side by side on the same model outputs; compare after every step."""
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x_theirs = x.clone()
    model = FakeModel(schedule, seed=seed + 1)
    for (t, t_prev), k in zip(ours.timesteps(n_steps), theirs.timesteps):
        assert int(k) == t - 1
        output = model(x, t)
        x, _ = ours.step(output, t, t_prev, x)
        x_theirs = theirs.step(output, int(k), x_theirs).prev_sample
        assert torch.allclose(x, x_theirs.double(), atol=1e-4, rtol=0), f"{name} differs at t={t}"


@pytest.mark.parametrize("n_steps", [10, 25])
def test_ddim_matches_diffusers(schedule, n_steps):
    ours = DDIMSampler(schedule, clip_x0=False, spacing="time")
    theirs = diffusers_scheduler(diffusers.DDIMScheduler, schedule, n_steps, clip_sample=False, set_alpha_to_one=True)
    assert_deterministic_steps_match(ours, theirs, schedule, n_steps, seed=1, name="DDIM")


def test_ddim_with_eta_matches_diffusers(schedule):
    ours = DDIMSampler(schedule, eta=0.7, clip_x0=False, spacing="time")
    theirs = diffusers_scheduler(diffusers.DDIMScheduler, schedule, 20, clip_sample=False)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x_theirs, g = x.clone(), torch.Generator().manual_seed(3)
    model = FakeModel(schedule, seed=4)
    for (t, t_prev), k in zip(ours.timesteps(20), theirs.timesteps):
        output = model(x, t)
        noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
        x, _ = ours.step(output, t, t_prev, x, noise)
        x_theirs = theirs.step(output, int(k), x_theirs, eta=0.7, variance_noise=noise).prev_sample
        assert torch.allclose(x, x_theirs, atol=1e-4, rtol=0), f"DDIM(eta=0.7) differs at t={t}"


@pytest.mark.parametrize("n_steps", [500, 25])
def test_ddpm_matches_diffusers(schedule, n_steps):
    ours = DDPMSampler(schedule)
    theirs = diffusers_scheduler(diffusers.DDPMScheduler, schedule, n_steps, clip_sample=False, variance_type="fixed_small")
    # Near t = 0, where 1 - alpha-bar is ~1e-4, diffusers' float32 alpha-bars alone move x by 1.5e-4:
    # give it float64 ones (its formulas read them at every step), so the test compares formulas.
    theirs.betas = schedule.betas[1:].clone()
    theirs.alphas = 1 - theirs.betas
    theirs.alphas_cumprod = torch.cumprod(theirs.alphas, dim=0)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x_theirs = x.clone()
    model = FakeModel(schedule, seed=6)
    for (t, t_prev), k in zip(ours.timesteps(n_steps), theirs.timesteps):
        output = model(x, t)
        # diffusers draws its noise inside step() from the generator; draw the same numbers for ours
        g_ours, g_theirs = torch.Generator().manual_seed(t), torch.Generator().manual_seed(t)
        noise = torch.randn(x.shape, generator=g_ours, dtype=torch.float64)
        x, _ = ours.step(output, t, t_prev, x, noise)
        x_theirs = theirs.step(output, int(k), x_theirs, generator=g_theirs).prev_sample
        assert torch.allclose(x, x_theirs, atol=1e-4, rtol=0), f"DDPM differs at t={t}"


@pytest.mark.parametrize("n_steps", [5, 10, 20])
def test_dpm_solver_matches_diffusers(schedule, n_steps):
    ours = DPMSolverSampler(schedule, clip_x0=False, spacing="time")
    theirs = diffusers_scheduler(
        diffusers.DPMSolverMultistepScheduler, schedule, n_steps,
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", final_sigmas_type="zero",
    )
    assert_deterministic_steps_match(ours, theirs, schedule, n_steps, seed=7, name="DPM-Solver++(2M)")


class TrapezoidUniPC(diffusers.UniPCMultistepScheduler):
    """diffusers' UniPC with its corrector held at p = 1 (the trapezoid rule), as the course's is.

    diffusers raises the corrector to p = 2 once two earlier outputs exist; everything else
    (the 2M predictor in its "bh2" form, the bookkeeping, the last step) is diffusers' own."""

    def multistep_uni_c_bh_update(self, this_model_output, *args, order=None, **kwargs):
        return super().multistep_uni_c_bh_update(this_model_output, *args, order=1, **kwargs)


@pytest.mark.parametrize("n_steps", [5, 10, 20])
def test_unipc_matches_diffusers(schedule, n_steps):
    ours = UniPCSampler(schedule, clip_x0=False, spacing="time")
    theirs = diffusers_scheduler(
        TrapezoidUniPC, schedule, n_steps,
        solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero",
    )
    assert_deterministic_steps_match(ours, theirs, schedule, n_steps, seed=8, name="UniPC")


def test_unipc_corrects_every_step_but_the_first_and_restart_forgets(schedule):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    model = FakeModel(schedule, seed=10)
    grid = UniPCSampler(schedule).timesteps(10)
    corrector, solver = UniPCSampler(schedule, clip_x0=False), DPMSolverSampler(schedule, clip_x0=False)
    output = model(x, grid[0][0])
    first, _ = corrector.step(output, *grid[0], x)
    assert torch.equal(first, solver.step(output, *grid[0], x)[0]), "the first step has nothing to correct"
    output = model(first, grid[1][0])
    corrected, x0_corrected = corrector.step(output, *grid[1], first)
    plain, x0_plain = solver.step(output, *grid[1], first)
    assert torch.equal(x0_corrected, x0_plain), "both read x0_hat off the same network output"
    assert not torch.allclose(corrected, plain), "from the second step on, x_t is corrected before the 2M step"
    corrector.restart()
    solver.restart()
    assert torch.equal(corrector.step(output, *grid[1], first)[0], solver.step(output, *grid[1], first)[0]), \
        "after restart() there is no earlier step to correct"


def test_unipc_is_exact_when_x0_hat_never_changes(schedule):
    """If the network always predicts the same clean sprite, every step of the ODE is exact: nothing to correct."""
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 2 - 1
    x = schedule.add_noise(x0, torch.full((2,), T), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(12), dtype=torch.float64))
    corrector, ddim = UniPCSampler(schedule, clip_x0=False), DDIMSampler(schedule, clip_x0=False)
    x_ddim = x.clone()
    for t, t_prev in corrector.timesteps(10):
        eps = schedule.predict_eps(x, torch.full((2,), t), x0)
        x, _ = corrector.step(eps, t, t_prev, x)
        x_ddim, _ = ddim.step(schedule.predict_eps(x_ddim, torch.full((2,), t), x0), t, t_prev, x_ddim)
        assert torch.allclose(x, x_ddim, atol=1e-10)


@pytest.mark.parametrize("spacing", ["logsnr", "banded"])
def test_log_snr_grids_are_strictly_decreasing_for_every_step_count(schedule, spacing):
    from shared.samplers import timestep_grid

    for n_steps in (1, 2, 3, 5, 10, 25, 100, 499, 500):
        levels = timestep_grid(schedule, n_steps, spacing)
        assert len(levels) == n_steps + 1 and levels[0] == T and levels[-1] == 0
        assert all(a > b for a, b in zip(levels, levels[1:]))
    small = NoiseSchedule(64, "linear")  # Lab 6's exercise schedule: the grids work for any T
    for n_steps in (2, 8, 63, 64):
        levels = timestep_grid(small, n_steps, spacing)
        assert len(levels) == n_steps + 1 and levels[0] == 64 and levels[-1] == 0
        assert all(a > b for a, b in zip(levels, levels[1:]))
    with pytest.raises(ValueError, match="spacing"):
        DDIMSampler(schedule, spacing="random")
    with pytest.raises(ValueError, match="spacing"):
        timestep_grid(schedule, 1, "random")


def test_plain_log_snr_grid_is_unchanged_for_the_shipped_students(schedule):
    """The distilled students were trained from teachers on this grid; their re-training commands rely on it."""
    from shared.samplers import timestep_grid

    assert timestep_grid(schedule, 10, "logsnr") == [500, 490, 475, 437, 349, 207, 90, 34, 11, 3, 0]
    assert timestep_grid(schedule, 32, "logsnr")[::4] == [500, 479, 445, 357, 207, 84, 29, 9, 0]


def test_banded_grid_is_the_default_and_denser_in_the_band(schedule):
    from shared.samplers import BAND, BAND_DENSITY, half_log_snr, timestep_grid

    levels = timestep_grid(schedule, 40, "banded")
    assert DDIMSampler(schedule).timesteps(40) == DPMSolverSampler(schedule).timesteps(40) == list(zip(levels[:-1], levels[1:]))
    lambdas = half_log_snr(schedule, torch.tensor(levels[:-1])).double()
    steps = lambdas[1:] - lambdas[:-1]
    middle = (lambdas[1:] + lambdas[:-1]) / 2
    inside = steps[(middle > BAND[0] + 0.3) & (middle < BAND[1] - 0.3)].mean()
    outside = steps[(middle < BAND[0] - 0.3) | (middle > BAND[1] + 0.3)].mean()
    assert inside * BAND_DENSITY == pytest.approx(outside, rel=0.25)
    assert levels[1] > 490  # no jump: the first step stays short, unlike the plain log-SNR grid's


def test_clipping_keeps_x0_hat_in_range_and_eps_consistent(schedule):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64) * 3
    _, x0_hat = DDIMSampler(schedule).step(torch.zeros_like(x), 100, 50, x)
    assert x0_hat.abs().max() <= 1
