"""Samplers: turning noise into sprites, one reverse step at a time.

Every sampler has diffusers' two methods: timesteps(n_steps) -> [(t, t_prev), ...] from T (pure
noise) down to 0, and step(model_output, t, t_prev, x_t, noise) -> (x_prev, x0_hat). The network
and the randomness come in from outside, so `generate` runs any sampler with any denoiser and a
seed gives the same sprites. Build one from the model's schedule: `DDIMSampler(model.schedule)`.

Grids: "time" (even in t), "logsnr" (even in lambda = log(alpha / sigma), Lu et al. 2022) and
"banded" (log-SNR, denser where a sprite's layout is decided). The deterministic samplers default
to the banded grid and clip x0_hat to [-1, 1]: 10 to 25 steps then suffice (docs/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .data import check_contexts
from .checks import describe
from .flow import StraightPath
from .schedule import NoiseSchedule


def half_log_snr(schedule: NoiseSchedule, t) -> torch.Tensor:
    """lambda_t = log(alpha_t / sigma_t) = 0.5 log(abar_t / (1 - abar_t)), the time variable of DPM-Solver; t an int or tensor."""
    return 0.5 * (schedule.alpha_bars[t].log() - schedule.one_minus_alpha_bars[t].log())


SPACINGS = ("time", "logsnr", "banded")
# Below lambda = -3.5 (abar < 0.001, the course schedule's last 10 levels) x_t is noise whatever t is,
# so the log-SNR grids jump there from T at once; level 3 (abar = 0.9996) is nearly clean, and the
# last step goes from there to 0.
LOGSNR_FIRST = -3.5
LOGSNR_LAST_LEVEL = 3
# The band of lambda where a 20-step solver made most of its error (docs/design.md), and how much
# denser the banded grid is there.
BAND = (-2.5, 0.5)
BAND_DENSITY = 3.0


def banded_lambdas(start: float, end: float, n_points: int) -> torch.Tensor:
    """n_points values of lambda from start to end, BAND_DENSITY times closer together inside BAND."""
    fine = torch.linspace(start, end, 10_001, dtype=torch.float64)
    density = torch.where((fine > BAND[0]) & (fine < BAND[1]), BAND_DENSITY, 1.0)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((density[1:] + density[:-1]) / 2, 0)])
    wanted = torch.linspace(0, float(cumulative[-1]), n_points, dtype=torch.float64)
    return fine[torch.searchsorted(cumulative, wanted).clamp(max=len(fine) - 1)]


def timestep_grid(schedule: NoiseSchedule, n_steps: int, spacing: str = "time") -> list[int]:
    """n_steps + 1 integer timesteps from T down to 0, strictly decreasing (Lab 4 writes the "time" case)."""
    T = schedule.T
    if not isinstance(n_steps, int) or not 1 <= n_steps <= T:
        raise ValueError(f"n_steps must be an integer in 1..{T}, got {n_steps!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if spacing == "time" or n_steps == 1:
        return torch.linspace(T, 0, n_steps + 1).round().long().tolist()
    # lambda_1..lambda_T, decreasing in t; float64 on the host, since an Apple GPU has no float64
    lambdas = half_log_snr(schedule, torch.arange(1, T + 1)).cpu().double()
    end = min(LOGSNR_LAST_LEVEL, T - n_steps + 1)
    if spacing == "logsnr":
        targets = torch.linspace(max(float(lambdas[-1]), LOGSNR_FIRST), float(lambdas[end - 1]), n_steps - 1)
    else:
        targets = banded_lambdas(float(lambdas[-1]), float(lambdas[end - 1]), n_steps)[1:]  # [0] is level T itself
    levels = [T]
    for i, target in enumerate(targets, start=1):  # nearest level, kept distinct, leaving room for the rest
        nearest = int((lambdas - target).abs().argmin()) + 1
        levels.append(max(min(nearest, levels[-1] - 1), n_steps - i))
    return levels + [0]


def check_levels(levels, T: int) -> list[int]:
    """A fixed grid of timesteps: integers strictly decreasing from T to 0."""
    levels = [int(t) for t in levels]
    if len(levels) < 2 or levels[0] != T or levels[-1] != 0 or any(a <= b for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must decrease strictly from T = {T} to 0, got {levels}")
    return levels


class Sampler:
    """The timestep grid and argument checks that every sampler shares."""

    name = "sampler"
    deterministic = True

    def __init__(self, schedule: NoiseSchedule, clip_x0: bool = False, spacing: str = "time", levels: list[int] | None = None):
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        self.schedule, self.clip_x0, self.spacing = schedule, clip_x0, spacing
        self.levels = None if levels is None else check_levels(levels, schedule.T)
        self.restart()

    def timesteps(self, n_steps: int | None = None) -> list[tuple[int, int]]:
        """Pairs (t, t_prev) from T down to 0, n_steps of them (all T by default), on this sampler's grid.

        A sampler made with fixed `levels` (a distilled student's own grid) only runs those.
        """
        if self.levels is not None:
            if n_steps not in (None, len(self.levels) - 1):
                raise ValueError(f"this sampler runs its fixed grid of {len(self.levels) - 1} steps {self.levels}, not {n_steps}")
            levels = self.levels
        else:
            levels = timestep_grid(self.schedule, self.schedule.T if n_steps is None else n_steps, self.spacing)
        return list(zip(levels[:-1], levels[1:]))

    def restart(self) -> None:
        """Forget earlier steps before a new run (multistep samplers remember some); also sets up their memory."""

    def advance(self, denoise, x_t, t, t_prev, noise=None, prediction: str = "eps"):
        """One step with the network `denoise(x, t)` (what `generate` calls): one call, then `step`.
        A sampler that needs more than one call per step (Heun) overrides this."""
        return self.step(denoise(x_t, t), t, t_prev, x_t, noise, prediction=prediction)

    def eps_and_x0(self, model_output, t, t_prev, x_t, prediction: str):
        """(eps_hat, x0_hat) at step t, after checking the step; x0_hat clipped to [-1, 1] if asked."""
        T = self.schedule.T  # None: a flow's continuous time, from 1 to 0
        if not 0 <= t_prev < t <= (T or 1):
            raise ValueError(f"need 0 <= t_prev < t <= {T or 1}, got t={t}, t_prev={t_prev}")
        batch = torch.full((x_t.shape[0],), t, dtype=torch.long if T else x_t.dtype, device=x_t.device)
        eps_hat, x0_hat = self.schedule.eps_and_x0(model_output, prediction, x_t, batch)
        if self.clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
            eps_hat = self.schedule.predict_eps(x_t, batch, x0_hat)
        return eps_hat, x0_hat


class DDPMSampler(Sampler):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2), optionally on a shorter grid of timesteps.

    One step draws x_{t'} from the forward process's posterior q(x_{t'} | x_t, x0_hat) (Ho et al.
    eq. 6-7). For t' = t - 1 its mean is eq. 11, 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_hat),
    and its variance beta-tilde_t; for t' < t - 1, alpha_t becomes abar_t / abar_t' (Nichol & Dhariwal 2021, sec. 4).
    """

    name = "ddpm"
    deterministic = False

    def step(self, model_output, t: int, t_prev: int, x_t, noise=None, prediction: str = "eps"):
        """x_t -> (x_{t_prev}, x0_hat); `noise` ~ N(0, I) like x_t, unused when t_prev = 0."""
        _, x0_hat = self.eps_and_x0(model_output, t, t_prev, x_t, prediction)
        s = self.schedule
        # Stored 1 - abar and alpha_t are more precise in float32 than differences and ratios.
        abar_prev, one_minus_abar, one_minus_abar_prev = s.alpha_bars[t_prev], s.one_minus_alpha_bars[t], s.one_minus_alpha_bars[t_prev]
        if t_prev == t - 1:
            alpha_step, beta_step, variance = s.alphas[t], s.betas[t], s.posterior_variance[t]
        else:
            alpha_step = s.alpha_bars[t] / abar_prev
            beta_step = 1 - alpha_step
            variance = beta_step * one_minus_abar_prev / one_minus_abar  # beta-tilde for the longer step
        # Ho et al. eq. 7: the posterior mean, a mix of x0_hat and x_t
        mean = (abar_prev.sqrt() * beta_step / one_minus_abar) * x0_hat + (alpha_step.sqrt() * one_minus_abar_prev / one_minus_abar) * x_t
        if t_prev == 0:
            return mean, x0_hat  # the last step adds no noise: x_0 is the answer
        if noise is None or noise.shape != x_t.shape:
            raise ValueError(f"the DDPM step needs fresh noise shaped like x_t {tuple(x_t.shape)}, got {getattr(noise, 'shape', None)}")
        return mean + variance.sqrt() * noise, x0_hat


class DDIMSampler(Sampler):
    """DDIM (Song, Meng & Ermon 2021, eq. 12): move x0_hat to the earlier noise level.

        x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_hat + sigma z,
        sigma = eta * sqrt((1 - abar_t') / (1 - abar_t)) * sqrt(1 - abar_t / abar_t').

    eta = 0: no fresh noise, so the same x_T gives the same sprite. eta = 1: sigma^2 is DDPM's
    beta-tilde and the step is DDPM's (Song et al., sec. 4.1).
    """

    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, clip_x0: bool = True, spacing: str = "banded", levels=None):
        super().__init__(schedule, clip_x0, spacing, levels)
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.eta = float(eta)
        self.deterministic = self.eta == 0

    def step(self, model_output, t: int, t_prev: int, x_t, noise=None, prediction: str = "eps"):
        eps_hat, x0_hat = self.eps_and_x0(model_output, t, t_prev, x_t, prediction)
        s = self.schedule
        abar_prev = s.alpha_bars[t_prev]
        variance = self.eta**2 * (s.one_minus_alpha_bars[t_prev] / s.one_minus_alpha_bars[t]) * (1 - s.alpha_bars[t] / abar_prev)
        x_prev = abar_prev.sqrt() * x0_hat + (s.one_minus_alpha_bars[t_prev] - variance).clamp(min=0).sqrt() * eps_hat
        if self.eta > 0 and t_prev > 0:
            if noise is None or noise.shape != x_t.shape:
                raise ValueError(f"DDIM with eta > 0 needs fresh noise shaped like x_t {tuple(x_t.shape)}, got {getattr(noise, 'shape', None)}")
            x_prev = x_prev + variance.sqrt() * noise
        return x_prev, x0_hat


class DPMSolverSampler(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), in the data-prediction form.

    With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t)
    and h = lambda_t' - lambda_t, one step from t to t' is
        x_{t'} = (sigma_t' / sigma_t) x_t - alpha_t' (e^{-h} - 1) D,
    where D = x0_hat (first order: DDIM) at the first step, and afterwards the extrapolation
        D = (1 + 1/(2r)) x0_hat_t - 1/(2r) x0_hat_{previous},  r = h_previous / h,
    which reuses the last step's network call: second order for free. The last step, to t' = 0
    (lambda infinite), returns x0_hat; a new run starts again at first order.
    """

    name = "dpmsolver"

    def __init__(self, schedule: NoiseSchedule, clip_x0: bool = True, spacing: str = "banded", levels=None):
        super().__init__(schedule, clip_x0, spacing, levels)

    def restart(self) -> None:
        self.previous = None  # (t, t_prev, x0_hat) of the last step taken

    def step(self, model_output, t: int, t_prev: int, x_t, noise=None, prediction: str = "eps"):
        _, x0_hat = self.eps_and_x0(model_output, t, t_prev, x_t, prediction)
        return self.multistep_update(x_t, x0_hat, t, t_prev), x0_hat

    def continues(self, t: int, x0_hat) -> bool:
        """Whether a step at t follows on from the last step taken (same run, same batch)."""
        return self.previous is not None and self.previous[1] == t and self.previous[2].shape == x0_hat.shape

    def exponential_step(self, x_t, D, t: int, t_prev: int):
        """(sigma_t' / sigma_t) x_t - alpha_t' (e^{-h} - 1) D: the exact solution from t to t' if x0_hat were D throughout."""
        s = self.schedule
        h = half_log_snr(s, t_prev) - half_log_snr(s, t)
        sigma_ratio = (s.one_minus_alpha_bars[t_prev] / s.one_minus_alpha_bars[t]).sqrt()
        return sigma_ratio * x_t - s.sqrt_alpha_bars[t_prev] * torch.expm1(-h) * D

    def multistep_update(self, x_t, x0_hat, t: int, t_prev: int):
        """The 2M step from x_t, given this step's x0_hat; remembers x0_hat for the next step."""
        earlier = self.previous if self.continues(t, x0_hat) else None
        self.previous = (t, t_prev, x0_hat)
        if t_prev == 0:
            return x0_hat
        D = x0_hat
        if earlier is not None:
            s = self.schedule
            lam_t = half_log_snr(s, t)
            r = (lam_t - half_log_snr(s, earlier[0])) / (half_log_snr(s, t_prev) - lam_t)
            D = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * earlier[2]
        return self.exponential_step(x_t, D, t, t_prev)


class UniPCSampler(DPMSolverSampler):
    """DPM-Solver++(2M) with a corrector that costs no network call: UniPC (Zhao et al. 2023).

    The call at x_t, made anyway for the next step, gives x0_hat_t at the end of the step just
    taken from s; the corrector first redoes that step with the trapezoid rule (UniC-1; why order 1: docs/design.md):
        x_t <- (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) (x0_hat_s + x0_hat_t) / 2.
    """

    name = "unipc"

    def restart(self) -> None:
        super().restart()
        self.start = None  # x at the last step's level, after its correction

    def step(self, model_output, t: int, t_prev: int, x_t, noise=None, prediction: str = "eps"):
        _, x0_hat = self.eps_and_x0(model_output, t, t_prev, x_t, prediction)
        if self.continues(t, x0_hat):
            s, _, x0_hat_s = self.previous
            x_t = self.exponential_step(self.start, (x0_hat_s + x0_hat) / 2, s, t)
        self.start = x_t
        return self.multistep_update(x_t, x0_hat, t, t_prev), x0_hat


class EulerSampler(Sampler):
    """Euler's method on a flow model's ODE dx/dt = v(x, t), from t = 1 to 0 (Lab 7):
        x_{t'} = x_t + (t' - t) v(x_t, t),
    which on the straight path is also DDIM. Its grid is an even grid u shifted to
    t = s u / (1 + (s - 1) u) (Esser et al. 2024, sec. 5.3.2): s = 1 is Lab 7's even grid; the
    default s = 2 puts half the steps above t = 2/3, near the noise (a lower FD, docs/design.md)."""

    name = "euler"

    def __init__(self, path: StraightPath, shift: float = 2.0):
        if not isinstance(path, StraightPath):
            raise TypeError(f"{type(self).__name__} integrates a flow model's ODE: build it from a flow model's path, not {type(path).__name__}")
        if not isinstance(shift, (int, float)) or not shift > 0:
            raise ValueError(f"shift must be a number > 0 (1 is the even grid), got {shift!r}")
        super().__init__(path)
        self.shift = float(shift)

    def timesteps(self, n_steps: int | None = None) -> list[tuple[float, float]]:
        """n_steps pairs (t, t_prev) from 1 to 0 on the shifted grid."""
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"a flow sampler needs a number of steps >= 1, got {n_steps!r}")
        u = torch.linspace(1, 0, n_steps + 1, dtype=torch.float64)
        times = (self.shift * u / (1 + (self.shift - 1) * u)).tolist()
        return list(zip(times[:-1], times[1:]))

    def step(self, model_output, t: float, t_prev: float, x_t, noise=None, prediction: str = "velocity"):
        """x_t -> (x_{t_prev}, x0_hat) with the velocity v = model_output at (x_t, t)."""
        _, x0_hat = self.eps_and_x0(model_output, t, t_prev, x_t, prediction)
        return x_t + (t_prev - t) * model_output, x0_hat


class HeunSampler(EulerSampler):
    """Heun's method (the trapezoid rule with an Euler predictor; Karras et al. 2022, Algorithm 1):
        x_e = x_t + h v(x_t, t),   x_{t'} = x_t + h (v(x_t, t) + v(x_e, t')) / 2,   h = t' - t.
    Second order for two calls a step. The last step, to t' = 0, is Euler's, as in Karras et al.:
    there v(x_e, 0) = -x_e whatever the sprite. So n steps cost 2n - 1 calls."""

    name = "heun"

    def advance(self, denoise, x_t, t, t_prev, noise=None, prediction: str = "velocity"):
        velocity = denoise(x_t, t)
        x_euler, x0_hat = self.step(velocity, t, t_prev, x_t, prediction=prediction)
        if t_prev == 0:
            return x_euler, x0_hat
        velocity_end = denoise(x_euler, t_prev)
        return x_t + (t_prev - t) * (velocity + velocity_end) / 2, x0_hat


SAMPLERS = {"ddpm": DDPMSampler, "ddim": DDIMSampler, "dpmsolver": DPMSolverSampler, "unipc": UniPCSampler,
            "euler": EulerSampler, "heun": HeunSampler}
FLOW_SAMPLERS = ("euler", "heun")


def make_sampler(name: str, schedule) -> Sampler:
    """The sampler `name` on `schedule` (a model's `.schedule`) with its defaults."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    if (name in FLOW_SAMPLERS) != isinstance(schedule, StraightPath):
        usable = FLOW_SAMPLERS if isinstance(schedule, StraightPath) else tuple(n for n in SAMPLERS if n not in FLOW_SAMPLERS)
        raise ValueError(f"sampler {name!r} does not fit this model's {getattr(schedule, 'kind', schedule)!r} schedule; use one of {usable}")
    return SAMPLERS[name](schedule)


@dataclass
class SampleRun:
    images: torch.Tensor  # (N, 3, 16, 16) final samples in [-1, 1] (not clipped)
    frames: list[torch.Tensor]  # x_t at the kept steps, each (N, 3, 16, 16), from noise to the end
    x0_frames: list[torch.Tensor]  # the network's x0_hat at those same steps
    frame_timesteps: list  # t of each kept frame
    network_calls: int = 0  # how many times the network ran on the batch (NFE)


@torch.inference_mode()
def generate(
    model,
    sampler: str | Sampler,
    noise: torch.Tensor,
    n_steps: int | None = None,
    contexts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    n_frames: int = 0,
    progress: bool = True,
) -> SampleRun:
    """Run a sampler from `noise` (B, 3, 16, 16) to sprites with `model`.

    sampler: a Sampler built from model.schedule, or a name ("ddim") for one with its defaults.
    contexts: (B, 9) mixtures, zero rows for "no context", or None (all unconditional).
    generator: CPU generator for the fresh noise of stochastic samplers (drawn on
    the CPU, then moved, so a seed gives the same sprites on every device).
    n_frames: keep about this many evenly spaced x_t and x0_hat for animations.
    """
    schedule = getattr(model, "schedule", None)  # every course model has one; a wrapper written in a lab may not
    if isinstance(sampler, str):
        if schedule is None:
            raise ValueError(f"this model has no .schedule to build a {sampler!r} sampler from: pass a Sampler instead")
        sampler = make_sampler(sampler, schedule)
    elif not hasattr(sampler, "timesteps") or not hasattr(sampler, "advance"):
        raise TypeError(f"sampler must be a name such as 'ddim' or a Sampler (the order is model, sampler, noise), got {type(sampler).__name__}")
    if schedule is not None and (sampler.schedule.kind, sampler.schedule.T) != (schedule.kind, schedule.T):
        raise ValueError(f"a {sampler.name} sampler on the {sampler.schedule.kind!r} schedule with T = {sampler.schedule.T} does not fit "
                         f"a model trained on the {schedule.kind!r} schedule with T = {schedule.T}: build it from model.schedule")
    device = next(model.parameters()).device
    if not isinstance(noise, torch.Tensor) or noise.ndim != 4:
        raise ValueError(f"noise must be a batch of images (B, 3, 16, 16), got {describe(noise)}")
    x = noise.to(device)
    if contexts is not None:
        contexts = check_contexts(contexts, x.shape[0]).to(device)
    grid = sampler.timesteps(n_steps)
    sampler.restart()
    time_dtype = torch.float32 if sampler.schedule.T is None else torch.long  # flow time is continuous
    calls = 0

    def denoise(x_t, t):
        nonlocal calls
        calls += 1
        return model(x_t, torch.full((x_t.shape[0],), t, dtype=time_dtype, device=device), contexts)

    keep = set(torch.linspace(0, len(grid) - 1, n_frames).round().long().tolist()) if n_frames else set()
    frames, x0_frames, frame_timesteps = [], [], []
    prediction = model.config.prediction
    for i, (t, t_prev) in enumerate(tqdm(grid, desc=f"{sampler.name} sampling", disable=not progress, leave=False)):
        fresh = None
        if not sampler.deterministic and t_prev > 0:
            fresh = torch.randn(x.shape, generator=generator).to(device)
        x_prev, x0_hat = sampler.advance(denoise, x, t, t_prev, fresh, prediction=prediction)
        if i in keep:
            frames.append(x.cpu())
            x0_frames.append(x0_hat.cpu())
            frame_timesteps.append(t)
        x = x_prev
    if n_frames:
        frames.append(x.cpu())
        x0_frames.append(x.cpu())
        frame_timesteps.append(0)
    return SampleRun(x.cpu(), frames, x0_frames, frame_timesteps, calls)
