"""Fair grading: a correct answer written another way passes its graded cell, a plausible wrong one fails it.

For each lab, the solution notebook's code cells run in one namespace, in the autograder's quick mode,
without the demo cells marked long-running (they only draw pictures). Each variant below then
replaces one answer, the graded test cell after it runs with its hidden tests, and the reference
answer is put back. The wrong variants are the slips a student is likely to make; the correct ones
are the other ways a student is likely to write the same thing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # the notebooks draw; nothing is shown
import matplotlib.pyplot as plt  # noqa: E402
from conftest import LABS, ROOT, grade_id  # noqa: E402
CORRECT, WRONG = True, False

VARIANTS = {  # lab: [(answer cell's grade_id, what the variant is, its source, whether it must pass)]
    "01_sampling": [
        ("schedule_quantities", "running product in a loop, posterior variance by torch.cat", '''
def schedule_quantities(betas):
    alphas = 1.0 - betas
    products = [alphas[0]]
    for a in alphas[1:]:
        products.append(products[-1] * a)
    alpha_bars = torch.stack(products)
    tail = betas[1:] * (1.0 - alpha_bars[:-1]) / (1.0 - alpha_bars[1:])
    return {"betas": betas, "alphas": alphas, "alpha_bars": alpha_bars,
            "posterior_variance": torch.cat([betas.new_zeros(1), tail])}
''', CORRECT),
        ("schedule_quantities", "running product of beta instead of alpha", '''
def schedule_quantities(betas):
    alphas = 1 - betas
    alpha_bars = torch.cumprod(betas, dim=0)
    posterior_variance = torch.zeros_like(betas)
    posterior_variance[1:] = betas[1:] * (1 - alpha_bars[:-1]) / (1 - alpha_bars[1:])
    return {"betas": betas, "alphas": alphas, "alpha_bars": alpha_bars, "posterior_variance": posterior_variance}
''', WRONG),
        ("predict_x0", "torch.sqrt and rsqrt", '''
def predict_x0(x_t, eps_hat, alpha_bar_t):
    return (x_t - torch.sqrt(1 - alpha_bar_t) * eps_hat) * torch.rsqrt(alpha_bar_t)
''', CORRECT),
        ("predict_x0", "divides by alpha-bar, not its square root", '''
def predict_x0(x_t, eps_hat, alpha_bar_t):
    return (x_t - (1 - alpha_bar_t).sqrt() * eps_hat) / alpha_bar_t
''', WRONG),
        ("predict_x0", "x_t changed in place", '''
def predict_x0(x_t, eps_hat, alpha_bar_t):
    x_t -= (1 - alpha_bar_t).sqrt() * eps_hat
    return x_t.div_(alpha_bar_t.sqrt())
''', WRONG),
        ("reverse_step", "the posterior mean of x0_hat and x_t (Ho et al. eq. 7)", '''
def reverse_step(x_t, eps_hat, t, noise, q):
    abar, abar_prev = q["alpha_bars"][t], q["alpha_bars"][t - 1]
    x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
    mean = (abar_prev.sqrt() * q["betas"][t] / (1 - abar)) * x0_hat + (q["alphas"][t].sqrt() * (1 - abar_prev) / (1 - abar)) * x_t
    return mean + q["posterior_variance"][t].sqrt() * noise
''', CORRECT),
        ("reverse_step", "sigma_t = sqrt(beta_t) instead of sqrt(beta-tilde_t)", '''
def reverse_step(x_t, eps_hat, t, noise, q):
    mean = (x_t - q["betas"][t] / (1 - q["alpha_bars"][t]).sqrt() * eps_hat) / q["alphas"][t].sqrt()
    return mean + q["betas"][t].sqrt() * noise
''', WRONG),
        ("reverse_step", "divides by sqrt(alpha-bar_t) instead of sqrt(alpha_t)", '''
def reverse_step(x_t, eps_hat, t, noise, q):
    mean = (x_t - q["betas"][t] / (1 - q["alpha_bars"][t]).sqrt() * eps_hat) / q["alpha_bars"][t].sqrt()
    return mean + q["posterior_variance"][t].sqrt() * noise
''', WRONG),
        ("sample_ddpm", "a while loop that keeps copies of the frames", '''
def sample_ddpm(model, q, x_T, noises, keep_every=50):
    t = q["betas"].shape[0] - 1
    x, frames = x_T, []
    while t >= 1:
        eps_hat = model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device))
        if t % keep_every == 0:
            frames.append((t, x.clone(), predict_x0(x, eps_hat, q["alpha_bars"][t]).clone()))
        x = reverse_step(x, eps_hat, t, noises[t], q)
        t -= 1
    return x, frames
''', CORRECT),
        ("sample_ddpm", "the fresh noise of step t taken from noises[t - 1]", '''
def sample_ddpm(model, q, x_T, noises, keep_every=50):
    T = len(q["betas"]) - 1
    x, frames = x_T, []
    for t in range(T, 0, -1):
        eps_hat = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        if t % keep_every == 0:
            frames.append((t, x, predict_x0(x, eps_hat, q["alpha_bars"][t])))
        x = reverse_step(x, eps_hat, t, noises[t - 1], q)
    return x, frames
''', WRONG),
        ("sample_ddpm", "a frame every keep_every steps counted from T", '''
def sample_ddpm(model, q, x_T, noises, keep_every=50):
    T = len(q["betas"]) - 1
    x, frames = x_T, []
    for t in range(T, 0, -1):
        eps_hat = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        if (T - t) % keep_every == 0:
            frames.append((t, x, predict_x0(x, eps_hat, q["alpha_bars"][t])))
        x = reverse_step(x, eps_hat, t, noises[t], q)
    return x, frames
''', WRONG),
        ("answer_no_noise", "the right letter in capitals, with a space", '''
answer = " C"
''', CORRECT),
        ("answer_no_noise", "another letter", '''
answer = "a"
''', WRONG),
        ("answer_no_noise", "the average-guess story, which DDIM contradicts", '''
answer = "b"
''', WRONG),
    ],
    "02_training": [
        ("perturb", "indexing with [:, None, ...] broadcast by reshape", '''
def perturb(x0, t, noise, alpha_bars):
    shape = (len(t),) + (1,) * (x0.dim() - 1)
    a = alpha_bars[t].reshape(shape)
    return torch.sqrt(a) * x0 + torch.sqrt(1 - a) * noise
''', CORRECT),
        ("perturb", "noise weighted by 1 - alpha-bar without the square root", '''
def perturb(x0, t, noise, alpha_bars):
    abar = alpha_bars[t].view(-1, *[1] * (x0.ndim - 1))
    return abar.sqrt() * x0 + (1 - abar) * noise
''', WRONG),
        ("draw_timesteps", "0..T-1 shifted by one", '''
def draw_timesteps(batch_size, T, generator):
    return torch.randint(0, T, (batch_size,), generator=generator) + 1
''', CORRECT),
        ("draw_timesteps", "0..T-1, never T", '''
def draw_timesteps(batch_size, T, generator):
    return torch.randint(0, T, (batch_size,), generator=generator)
''', WRONG),
        ("denoising_loss", "the mean of squares written out", '''
def denoising_loss(model, x0, t, noise, alpha_bars):
    prediction = model(perturb(x0, t, noise, alpha_bars), t)
    return ((prediction - noise) ** 2).mean()
''', CORRECT),
        ("denoising_loss", "the model called with t / T", '''
def denoising_loss(model, x0, t, noise, alpha_bars):
    T = len(alpha_bars) - 1
    return F.mse_loss(model(perturb(x0, t, noise, alpha_bars), t / T), noise)
''', WRONG),
        ("denoising_loss", "the sum of squares instead of the mean", '''
def denoising_loss(model, x0, t, noise, alpha_bars):
    prediction = model(perturb(x0, t, noise, alpha_bars), t)
    return ((prediction - noise) ** 2).sum()
''', WRONG),
        ("optimisation_step", "gradients set to None, loss read with float()", '''
def optimisation_step(model, optimizer, x0, t, noise, alpha_bars):
    optimizer.zero_grad(set_to_none=True)
    loss = denoising_loss(model, x0, t, noise, alpha_bars)
    loss.backward()
    optimizer.step()
    return float(loss)
''', CORRECT),
        ("optimisation_step", "gradients never zeroed", '''
def optimisation_step(model, optimizer, x0, t, noise, alpha_bars):
    loss = denoising_loss(model, x0, t, noise, alpha_bars)
    loss.backward()
    optimizer.step()
    return loss.item()
''', WRONG),
        ("train", "the batch left on the CPU, never moved to data.device", '''
def train(model, optimizer, data, alpha_bars, n_steps, batch_size, generator, callback=None):
    T = len(alpha_bars) - 1
    losses = []
    for step in range(1, n_steps + 1):
        index = torch.randint(len(data), (batch_size,), generator=generator)
        x0 = data[index]
        t = draw_timesteps(batch_size, T, generator)
        noise = torch.randn(x0.shape, generator=generator)
        losses.append(optimisation_step(model, optimizer, x0, t, noise, alpha_bars))
        if callback is not None:
            callback(step, losses[-1])
    return losses
''', WRONG),
        ("train", "callback told the step counted from 0", '''
def train(model, optimizer, data, alpha_bars, n_steps, batch_size, generator, callback=None):
    T = len(alpha_bars) - 1
    losses = []
    for step in range(n_steps):
        index = torch.randint(len(data), (batch_size,), generator=generator)
        x0 = data[index.to(data.device)]
        t = draw_timesteps(batch_size, T, generator).to(data.device)
        noise = torch.randn(x0.shape, generator=generator).to(data.device)
        losses.append(optimisation_step(model, optimizer, x0, t, noise, alpha_bars))
        if callback is not None:
            callback(step, losses[-1])
    return losses
''', WRONG),
        ("train", "the course's loop that Lab 2's demos fall back on, called instead of writing one", '''
from tools.train import course_train_loop as train
''', WRONG),
        ("checkpoint", "other key names, read back consistently", '''
def save_checkpoint(path, model, optimizer, step):
    torch.save({"step_count": step, "weights": model.state_dict(), "optimiser_state": optimizer.state_dict()}, path)


def load_checkpoint(path, model, optimizer):
    saved = torch.load(path, weights_only=True)
    model.load_state_dict(saved["weights"])
    optimizer.load_state_dict(saved["optimiser_state"])
    return saved["step_count"]
''', CORRECT),
        ("checkpoint", "the optimiser's state left out", '''
def save_checkpoint(path, model, optimizer, step):
    torch.save({"model": model.state_dict(), "step": step}, path)


def load_checkpoint(path, model, optimizer):
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    return state["step"]
''', WRONG),
        ("prediction_target", "a table of the three targets", '''
def prediction_target(x0, noise, alpha_bar_t, kind):
    targets = {"eps": lambda: noise, "x0": lambda: x0,
               "v": lambda: torch.sqrt(alpha_bar_t) * noise - torch.sqrt(1 - alpha_bar_t) * x0}
    if kind not in targets:
        raise ValueError(f"unknown prediction kind {kind!r}")
    return targets[kind]()
''', CORRECT),
        ("prediction_target", "v with the opposite sign", '''
def prediction_target(x0, noise, alpha_bar_t, kind):
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    if kind == "v":
        return (1 - alpha_bar_t).sqrt() * x0 - alpha_bar_t.sqrt() * noise
    raise ValueError(kind)
''', WRONG),
        ("prediction_target", "v with x0 and the noise swapped", '''
def prediction_target(x0, noise, alpha_bar_t, kind):
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    if kind == "v":
        return alpha_bar_t.sqrt() * x0 - (1 - alpha_bar_t).sqrt() * noise
    raise ValueError(kind)
''', WRONG),
        ("prediction_target", "alpha-bar where its square root belongs", '''
def prediction_target(x0, noise, alpha_bar_t, kind):
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    if kind == "v":
        return alpha_bar_t * noise - (1 - alpha_bar_t) * x0
    raise ValueError(kind)
''', WRONG),
        ("prediction_target", "an unknown kind falls through to v", '''
def prediction_target(x0, noise, alpha_bar_t, kind):
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    return alpha_bar_t.sqrt() * noise - (1 - alpha_bar_t).sqrt() * x0
''', WRONG),
    ],
    "03_context": [
        ("context_vectors", "rows built as lists and stacked", '''
def context_vectors(requests):
    rows = []
    for request in requests:
        row = torch.zeros(9)
        if isinstance(request, str):
            request = {request: 1}
        for name, weight in (request or {}).items():
            if name not in GROUPS:
                raise ValueError(f"{name} is not a group")
            row[GROUPS.index(name)] = float(weight)
        rows.append(row / row.sum() if row.sum() > 0 else row)
    return torch.stack(rows) if rows else torch.zeros(0, 9)
''', CORRECT),
        ("context_vectors", "an unknown name inside a mixture silently left out", '''
def context_vectors(requests):
    rows = torch.zeros(len(requests), len(GROUPS))
    for i, request in enumerate(requests):
        if request is None:
            continue
        if isinstance(request, str):
            if request not in GROUPS:
                raise ValueError(f"unknown group {request!r}")
            rows[i, GROUPS.index(request)] = 1.0
            continue
        for name, weight in request.items():
            if name in GROUPS:
                rows[i, GROUPS.index(name)] += weight
        rows[i] /= rows[i].sum()
    return rows
''', WRONG),
        ("context_vectors", "mixtures not normalised", '''
def context_vectors(requests):
    rows = torch.zeros(len(requests), len(GROUPS))
    for i, request in enumerate(requests):
        if request is None:
            continue
        weights = request if isinstance(request, dict) else {request: 1.0}
        for name, weight in weights.items():
            if name not in GROUPS:
                raise ValueError(f"unknown group {name!r}")
            rows[i, GROUPS.index(name)] += weight
    return rows
''', WRONG),
        ("drop_context", "torch.where on the same uniform draws", '''
def drop_context(contexts, p_uncond, generator):
    drop = torch.rand(contexts.shape[0], generator=generator) < p_uncond
    return torch.where(drop.to(contexts.device)[:, None], torch.zeros_like(contexts), contexts)
''', CORRECT),
        ("drop_context", "rows zeroed in place", '''
def drop_context(contexts, p_uncond, generator):
    u = torch.rand(len(contexts), generator=generator).to(contexts.device)
    contexts[u < p_uncond] = 0
    return contexts
''', WRONG),
        ("drop_context", "the kept and dropped rows swapped", '''
def drop_context(contexts, p_uncond, generator):
    u = torch.rand(len(contexts), generator=generator).to(contexts.device)
    return contexts * (u < p_uncond).to(contexts.dtype)[:, None]
''', WRONG),
        ("context_loss", "x_t from the schedule's square roots, F.mse_loss the other way round", '''
def context_loss(model, schedule, x0, contexts, t, noise, p_uncond, generator):
    dropped = drop_context(contexts, p_uncond, generator)
    a = schedule.sqrt_alpha_bars[t].view(-1, 1, 1, 1)
    s = schedule.sqrt_one_minus_alpha_bars[t].view(-1, 1, 1, 1)
    return F.mse_loss(noise, model(a * x0 + s * noise, t, dropped))
''', CORRECT),
        ("context_loss", "the keep probability 1 - p passed as the drop probability", '''
def context_loss(model, schedule, x0, contexts, t, noise, p_uncond, generator):
    dropped = drop_context(contexts, 1 - p_uncond, generator)
    return F.mse_loss(model(schedule.add_noise(x0, t, noise), t, dropped), noise)
''', WRONG),
        ("context_loss", "a fixed drop probability of one half", '''
def context_loss(model, schedule, x0, contexts, t, noise, p_uncond, generator):
    dropped = drop_context(contexts, 0.5, generator)
    return F.mse_loss(model(schedule.add_noise(x0, t, noise), t, dropped), noise)
''', WRONG),
        ("context_loss", "the contexts passed on without dropout", '''
def context_loss(model, schedule, x0, contexts, t, noise, p_uncond, generator):
    drop_context(contexts, p_uncond, generator)
    x_t = schedule.add_noise(x0, t, noise)
    return F.mse_loss(model(x_t, t, contexts), noise)
''', WRONG),
        ("sample_with_context", "its own step counter", '''
def sample_with_context(model, sampler, x_T, contexts, noises, n_steps):
    x, i = x_T, 0
    for t, t_prev in sampler.timesteps(n_steps):
        eps_hat = model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device), contexts)
        x = sampler.step(eps_hat, t, t_prev, x, noises[i])[0]
        i += 1
    return x
''', CORRECT),
        ("sample_with_context", "the contexts forgotten after the first step", '''
def sample_with_context(model, sampler, x_T, contexts, noises, n_steps):
    x = x_T
    for i, (t, t_prev) in enumerate(sampler.timesteps(n_steps)):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x, _ = sampler.step(model(x, t_batch, contexts if i == 0 else None), t, t_prev, x, noises[i])
    return x
''', WRONG),
        ("context_sweep", "one row per weight, stacked", '''
def context_sweep(group_a, group_b, n):
    a, b = context_vectors([group_a, group_b])
    return torch.stack([(1 - w) * a + w * b for w in torch.linspace(0, 1, n)])
''', CORRECT),
        ("context_sweep", "from group_b to group_a", '''
def context_sweep(group_a, group_b, n):
    a, b = context_vectors([group_a, group_b])
    weights = torch.linspace(0, 1, n)[:, None]
    return weights * a + (1 - weights) * b
''', WRONG),
        ("film", "scale and shift by view and unbind, the product by addcmul", '''
def film(features, embedding, film_layer):
    B, C = features.shape[:2]
    scale, shift = film_layer(embedding).view(B, 2, C, 1, 1).unbind(1)
    return torch.addcmul(shift, features, 1 + scale)
''', CORRECT),
        ("film", "the scale without the 1 +", '''
def film(features, embedding, film_layer):
    scale, shift = film_layer(embedding)[:, :, None, None].chunk(2, dim=1)
    return features * scale + shift
''', WRONG),
        ("film", "the halves read the other way: shift first", '''
def film(features, embedding, film_layer):
    shift, scale = film_layer(embedding)[:, :, None, None].chunk(2, dim=1)
    return features * (1 + scale) + shift
''', WRONG),
        ("film", "shifted before it is scaled", '''
def film(features, embedding, film_layer):
    scale, shift = film_layer(embedding)[:, :, None, None].chunk(2, dim=1)
    return (features + shift) * (1 + scale)
''', WRONG),
        ("film", "the features changed in place", '''
def film(features, embedding, film_layer):
    scale, shift = film_layer(embedding)[:, :, None, None].chunk(2, dim=1)
    return features.mul_(1 + scale).add_(shift)
''', WRONG),
    ],
    "04_fast_sampling": [
        ("ddim_step", "sigma from beta-tilde of the jump, direction written with sigma squared", '''
def ddim_step(x_t, eps_hat, abar_t, abar_next, eta, noise):
    x0_hat = (x_t - torch.sqrt(1 - abar_t) * eps_hat) / torch.sqrt(abar_t)
    beta_tilde = (1 - abar_next) / (1 - abar_t) * (1 - abar_t / abar_next)
    variance = eta ** 2 * beta_tilde
    direction = torch.sqrt(torch.clamp(1 - abar_next - variance, min=0)) * eps_hat
    result = torch.sqrt(abar_next) * x0_hat + direction
    return result + torch.sqrt(variance) * noise if eta > 0 else result
''', CORRECT),
        ("ddim_step", "the fresh noise's variance left out of the direction term", '''
def ddim_step(x_t, eps_hat, abar_t, abar_next, eta, noise):
    x0_hat = (x_t - (1 - abar_t).sqrt() * eps_hat) / abar_t.sqrt()
    sigma = eta * ((1 - abar_next) / (1 - abar_t) * (1 - abar_t / abar_next)).sqrt()
    x_next = abar_next.sqrt() * x0_hat + (1 - abar_next).sqrt() * eps_hat
    return x_next + sigma * noise if eta > 0 else x_next
''', WRONG),
        ("timestep_grid", "Python's round on T - i T / n", '''
def timestep_grid(T, n_steps):
    return [round(T - i * T / n_steps) for i in range(n_steps + 1)]
''', CORRECT),
        ("timestep_grid", "truncated instead of rounded", '''
def timestep_grid(T, n_steps):
    return [int(v) for v in torch.linspace(T, 0, n_steps + 1)]
''', WRONG),
        ("timestep_grid", "a long tensor instead of a list", '''
def timestep_grid(T, n_steps):
    return torch.linspace(T, 0, n_steps + 1).round().long()
''', CORRECT),
        ("timestep_grid", "rounded floats, which cannot index alpha_bars", '''
def timestep_grid(T, n_steps):
    return torch.linspace(T, 0, n_steps + 1).round().tolist()
''', WRONG),
        ("sample_ddim", "levels walked by index", '''
def sample_ddim(model, alpha_bars, x_T, n_steps, eta=0.0, noises=None):
    levels = timestep_grid(alpha_bars.shape[0] - 1, n_steps)
    x = x_T
    for i in range(n_steps):
        t, t_next = levels[i], levels[i + 1]
        eps_hat = model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device))
        x = ddim_step(x, eps_hat, alpha_bars[t], alpha_bars[t_next], eta, noises[i] if noises is not None else None)
    return x
''', CORRECT),
        ("sample_ddim", "the notebook's T = 500 instead of the schedule's length", '''
def sample_ddim(model, alpha_bars, x_T, n_steps, eta=0.0, noises=None):
    grid = timestep_grid(T, n_steps)
    x = x_T
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        eps_hat = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        x = ddim_step(x, eps_hat, alpha_bars[t], alpha_bars[t_next], eta, None if noises is None else noises[i])
    return x
''', WRONG),
        ("dpm_solver_step", "written with sigma and alpha, exp(-h) - 1 spelled out", '''
def dpm_solver_step(x_t, x0_hat, abar_t, abar_next, last_x0_hat=None, abar_last=None):
    if abar_next == 1:
        return x0_hat
    alpha = lambda abar: abar.sqrt()
    sigma = lambda abar: (1 - abar).sqrt()
    lam = lambda abar: torch.log(alpha(abar) / sigma(abar))
    h = lam(abar_next) - lam(abar_t)
    D = x0_hat
    if last_x0_hat is not None:
        r = (lam(abar_t) - lam(abar_last)) / h
        D = x0_hat + (x0_hat - last_x0_hat) / (2 * r)
    return sigma(abar_next) / sigma(abar_t) * x_t - alpha(abar_next) * (torch.exp(-h) - 1) * D
''', CORRECT),
        ("dpm_solver_step", "the step ratio r inverted", '''
def dpm_solver_step(x_t, x0_hat, abar_t, abar_next, last_x0_hat=None, abar_last=None):
    if abar_next >= 1:
        return x0_hat
    lam = lambda abar: 0.5 * (torch.log(abar) - torch.log(1 - abar))
    h = lam(abar_next) - lam(abar_t)
    D = x0_hat
    if last_x0_hat is not None:
        r = h / (lam(abar_t) - lam(abar_last))
        D = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * last_x0_hat
    return ((1 - abar_next) / (1 - abar_t)).sqrt() * x_t - abar_next.sqrt() * torch.expm1(-h) * D
''', WRONG),
        ("sample_dpm_solver", "the notebook's T = 500 instead of the schedule's length", '''
def sample_dpm_solver(model, alpha_bars, x_T, n_steps):
    grid = timestep_grid(T, n_steps)
    x, last_x0_hat, abar_last = x_T, None, None
    for t, t_next in zip(grid[:-1], grid[1:]):
        eps_hat = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        x0_hat = (x - (1 - alpha_bars[t]).sqrt() * eps_hat) / alpha_bars[t].sqrt()
        x = dpm_solver_step(x, x0_hat, alpha_bars[t], alpha_bars[t_next], last_x0_hat, abar_last)
        last_x0_hat, abar_last = x0_hat, alpha_bars[t]
    return x
''', WRONG),
        ("corrector_step", "exp(-h) - 1 spelled out, lambda from the log ratio", '''
def corrector_step(x_last, x0_hat_last, x0_hat, abar_last, abar_t):
    lam = lambda abar: torch.log(abar.sqrt() / (1 - abar).sqrt())
    h = lam(abar_t) - lam(abar_last)
    return ((1 - abar_t) / (1 - abar_last)).sqrt() * x_last - abar_t.sqrt() * (torch.exp(-h) - 1) * (0.5 * x0_hat_last + 0.5 * x0_hat)
''', CORRECT),
        ("corrector_step", "only the new x0_hat, no average", '''
def corrector_step(x_last, x0_hat_last, x0_hat, abar_last, abar_t):
    lam = lambda abar: 0.5 * (torch.log(abar) - torch.log(1 - abar))
    h = lam(abar_t) - lam(abar_last)
    return ((1 - abar_t) / (1 - abar_last)).sqrt() * x_last - abar_t.sqrt() * torch.expm1(-h) * x0_hat
''', WRONG),
        ("sample_unipc", "the notebook's T = 500 instead of the schedule's length", '''
def sample_unipc(model, alpha_bars, x_T, n_steps):
    grid = timestep_grid(T, n_steps)
    x, x_last, last_x0_hat, abar_last = x_T, None, None, None
    for t, t_next in zip(grid[:-1], grid[1:]):
        eps_hat = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        x0_hat = (x - (1 - alpha_bars[t]).sqrt() * eps_hat) / alpha_bars[t].sqrt()
        if last_x0_hat is not None:
            x = corrector_step(x_last, last_x0_hat, x0_hat, abar_last, alpha_bars[t])
        x_last = x
        x = dpm_solver_step(x, x0_hat, alpha_bars[t], alpha_bars[t_next], last_x0_hat, abar_last)
        last_x0_hat, abar_last = x0_hat, alpha_bars[t]
    return x
''', WRONG),
        ("sample_unipc", "the corrector started from the uncorrected point", '''
def sample_unipc(model, alpha_bars, x_T, n_steps):
    grid = timestep_grid(len(alpha_bars) - 1, n_steps)
    x, x_last, last_x0_hat, abar_last = x_T, None, None, None
    for t, t_next in zip(grid[:-1], grid[1:]):
        eps_hat = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        x0_hat = (x - (1 - alpha_bars[t]).sqrt() * eps_hat) / alpha_bars[t].sqrt()
        start = x
        if last_x0_hat is not None:
            x = corrector_step(x_last, last_x0_hat, x0_hat, abar_last, alpha_bars[t])
        x_last = start
        x = dpm_solver_step(x, x0_hat, alpha_bars[t], alpha_bars[t_next], last_x0_hat, abar_last)
        last_x0_hat, abar_last = x0_hat, alpha_bars[t]
    return x
''', WRONG),
    ],
    "05_guidance": [
        ("log_prob_gradient", "minus the gradient of the summed cross-entropy", '''
def log_prob_gradient(classifier, x_t, t, labels):
    with torch.enable_grad():
        x = x_t.detach().clone().requires_grad_()
        loss = F.cross_entropy(classifier(x, t), labels, reduction="sum")
        loss.backward()
    return -x.grad
''', CORRECT),
        ("log_prob_gradient", "the gradient of the probability, not its log", '''
def log_prob_gradient(classifier, x_t, t, labels):
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        p = F.softmax(classifier(x, t), dim=1)
        chosen = p[torch.arange(len(labels)), labels].sum()
        (gradient,) = torch.autograd.grad(chosen, x)
    return gradient
''', WRONG),
        ("classifier_guided_eps", "the sign folded into the scale", '''
def classifier_guided_eps(eps_hat, gradient, scale, sqrt_one_minus_abar):
    return eps_hat + (-scale) * sqrt_one_minus_abar * gradient
''', CORRECT),
        ("classifier_guided_eps", "pushed along the gradient with a plus sign", '''
def classifier_guided_eps(eps_hat, gradient, scale, sqrt_one_minus_abar):
    return eps_hat + scale * sqrt_one_minus_abar * gradient
''', WRONG),
        ("sample_classifier_guided", "calls by keyword, the factor from alpha-bar", '''
def sample_classifier_guided(model, classifier, sampler, x_T, labels, scale, n_steps):
    x = x_T
    for t, t_prev in sampler.timesteps(n_steps):
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        eps_hat = model(x, t_batch)
        gradient = log_prob_gradient(classifier=classifier, x_t=x, t=t_batch, labels=labels)
        root = (1 - sampler.schedule.alpha_bars[t]).sqrt()
        guided = classifier_guided_eps(eps_hat=eps_hat, gradient=gradient, scale=scale, sqrt_one_minus_abar=root)
        x = sampler.step(guided, t, t_prev, x)[0]
    return x
''', CORRECT),
        ("sample_classifier_guided", "the square root of alpha-bar instead of one minus it", '''
def sample_classifier_guided(model, classifier, sampler, x_T, labels, scale, n_steps):
    x = x_T
    for t, t_prev in sampler.timesteps(n_steps):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps_hat = model(x, t_batch)
        gradient = log_prob_gradient(classifier, x, t_batch, labels)
        guided = classifier_guided_eps(eps_hat, gradient, scale, sampler.schedule.sqrt_alpha_bars[t])
        x, _ = sampler.step(guided, t, t_prev, x)
    return x
''', WRONG),
        ("sample_classifier_guided", "the model and the classifier called at t_prev", '''
def sample_classifier_guided(model, classifier, sampler, x_T, labels, scale, n_steps):
    x = x_T
    for t, t_prev in sampler.timesteps(n_steps):
        t_batch = torch.full((x.shape[0],), t_prev, dtype=torch.long, device=x.device)
        eps_hat = model(x, t_batch)
        gradient = log_prob_gradient(classifier, x, t_batch, labels)
        guided = classifier_guided_eps(eps_hat, gradient, scale, sampler.schedule.sqrt_one_minus_alpha_bars[t])
        x, _ = sampler.step(guided, t, t_prev, x)
    return x
''', WRONG),
        ("sample_classifier_guided", "only the classifier called at t_prev", '''
def sample_classifier_guided(model, classifier, sampler, x_T, labels, scale, n_steps):
    x = x_T
    for t, t_prev in sampler.timesteps(n_steps):
        eps_hat = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        gradient = log_prob_gradient(classifier, x, torch.full((x.shape[0],), t_prev, dtype=torch.long, device=x.device), labels)
        guided = classifier_guided_eps(eps_hat, gradient, scale, sampler.schedule.sqrt_one_minus_alpha_bars[t])
        x, _ = sampler.step(guided, t, t_prev, x)
    return x
''', WRONG),
        ("cfg_combine", "the same combination rearranged: cond + w (cond - uncond)", '''
def cfg_combine(eps_cond, eps_uncond, w):
    return eps_cond + w * (eps_cond - eps_uncond)
''', CORRECT),
        ("cfg_combine", "as an extrapolation from the unconditional prediction", '''
def cfg_combine(eps_cond, eps_uncond, w):
    return eps_uncond + (1 + w) * (eps_cond - eps_uncond)
''', CORRECT),
        ("cfg_combine", "w where the course's convention has 1 + w", '''
def cfg_combine(eps_cond, eps_uncond, w):
    return eps_uncond + w * (eps_cond - eps_uncond)
''', WRONG),
        ("cfg_eps", "the halves sliced by the batch size", '''
def cfg_eps(model, x, t, contexts, w):
    B = x.shape[0]
    both = model(torch.cat((x, x), dim=0), t.repeat(2), torch.cat((contexts, contexts.new_zeros(contexts.shape)), dim=0))
    return cfg_combine(both[:B], both[B:], w)
''', CORRECT),
        ("cfg_eps", "the no-context rows first, the halves read the other way", '''
def cfg_eps(model, x, t, contexts, w):
    output = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([torch.zeros_like(contexts), contexts]))
    eps_cond, eps_uncond = output.chunk(2)
    return cfg_combine(eps_cond, eps_uncond, w)
''', WRONG),
        ("implicit_classifier_gradient", "the unconditional score minus the conditional one, by reciprocal", '''
def implicit_classifier_gradient(eps_cond, eps_uncond, sqrt_one_minus_abar):
    return (eps_uncond - eps_cond) * sqrt_one_minus_abar.reciprocal()
''', CORRECT),
        ("implicit_classifier_gradient", "the sign flipped: conditional minus unconditional", '''
def implicit_classifier_gradient(eps_cond, eps_uncond, sqrt_one_minus_abar):
    return (eps_cond - eps_uncond) / sqrt_one_minus_abar
''', WRONG),
        ("implicit_classifier_gradient", "multiplied by sqrt(1 - abar) instead of divided", '''
def implicit_classifier_gradient(eps_cond, eps_uncond, sqrt_one_minus_abar):
    return -(eps_cond - eps_uncond) * sqrt_one_minus_abar
''', WRONG),
        ("implicit_classifier_gradient", "divided by 1 - abar, the square", '''
def implicit_classifier_gradient(eps_cond, eps_uncond, sqrt_one_minus_abar):
    return (eps_uncond - eps_cond) / sqrt_one_minus_abar ** 2
''', WRONG),
        ("implicit_classifier_gradient", "the difference alone, no division", '''
def implicit_classifier_gradient(eps_cond, eps_uncond, sqrt_one_minus_abar):
    return eps_uncond - eps_cond
''', WRONG),
    ],
    "06_distillation": [
        ("teacher_sprites", "chunks from torch.split", '''
def teacher_sprites(teacher, schedule, noise, n_steps, batch_size=512):
    return torch.cat([generate(teacher, DPMSolverSampler(schedule), chunk, n_steps, progress=False).images
                      for chunk in noise.split(batch_size)])
''', CORRECT),
        ("teacher_sprites", "only the first chunk", '''
def teacher_sprites(teacher, schedule, noise, n_steps, batch_size=512):
    return generate(teacher, DPMSolverSampler(schedule), noise[:batch_size], n_steps, progress=False).images
''', WRONG),
        ("one_step_sample", "alpha and sigma from alpha-bar", '''
def one_step_sample(student, schedule, noise):
    T = len(schedule.alpha_bars) - 1
    abar = schedule.alpha_bars[T]
    v = student(noise, torch.full((len(noise),), T, dtype=torch.long, device=noise.device))
    return torch.sqrt(abar) * noise - torch.sqrt(1 - abar) * v
''', CORRECT),
        ("one_step_sample", "alpha-bar where its square root belongs", '''
def one_step_sample(student, schedule, noise):
    T = schedule.T
    t = torch.full((noise.shape[0],), T, dtype=torch.long, device=noise.device)
    v = student(noise, t)
    return schedule.alpha_bars[T] * noise - (1 - schedule.alpha_bars[T]) * v
''', WRONG),
        ("one_step_sample", "the lab's global T instead of the schedule's", '''
def one_step_sample(student, schedule, noise):
    t = torch.full((noise.shape[0],), T, dtype=torch.long, device=noise.device)
    return schedule.sqrt_alpha_bars[T] * noise - schedule.sqrt_one_minus_alpha_bars[T] * student(noise, t)
''', WRONG),
        ("distillation_loss", "the mean of squares written out", '''
def distillation_loss(student, schedule, noise, targets):
    return (one_step_sample(student, schedule, noise) - targets).pow(2).mean()
''', CORRECT),
        ("distillation_loss", "the sum of squares instead of the mean", '''
def distillation_loss(student, schedule, noise, targets):
    return (one_step_sample(student, schedule, noise) - targets).pow(2).sum()
''', WRONG),
        ("progressive_target", "alpha and sigma from alpha-bar, the end case by sigma", '''
def progressive_target(teacher, sampler, x_t, t, t_mid, t_next):
    x = x_t
    for t_from, t_to in [(t, t_mid), (t_mid, t_next)]:
        with torch.no_grad():
            output = teacher(x, torch.full((len(x),), t_from, dtype=torch.long, device=x.device))
        x = sampler.step(output, t_from, t_to, x, prediction=teacher.config.prediction)[0]
    abar = sampler.schedule.alpha_bars
    sigma_next, sigma_t = (1 - abar[t_next]).sqrt(), (1 - abar[t]).sqrt()
    if sigma_next == 0:
        return x
    return (x - sigma_next / sigma_t * x_t) / (abar[t_next].sqrt() - sigma_next / sigma_t * abar[t].sqrt())
''', CORRECT),
        ("progressive_target", "the formula with t_mid where t belongs", '''
def progressive_target(teacher, sampler, x_t, t, t_mid, t_next):
    x = x_t
    with torch.no_grad():
        for t_from, t_to in ((t, t_mid), (t_mid, t_next)):
            t_batch = torch.full((x.shape[0],), t_from, dtype=torch.long, device=x.device)
            x, _ = sampler.step(teacher(x, t_batch), t_from, t_to, x, prediction=teacher.config.prediction)
    if t_next == 0:
        return x
    s = sampler.schedule
    ratio = s.sqrt_one_minus_alpha_bars[t_next] / s.sqrt_one_minus_alpha_bars[t_mid]
    return (x - ratio * x_t) / (s.sqrt_alpha_bars[t_next] - ratio * s.sqrt_alpha_bars[t_mid])
''', WRONG),
    ],
    "07_flow_matching": [
        ("ddim_as_euler", "through x0_hat, as DDIM is usually written", '''
def ddim_as_euler(x_t, eps_hat, abar_t, abar_prev):
    x0_hat = (x_t - torch.sqrt(1 - abar_t) * eps_hat) / torch.sqrt(abar_t)
    return torch.sqrt(abar_prev) * x0_hat + torch.sqrt(1 - abar_prev) * eps_hat
''', CORRECT),
        ("ddim_as_euler", "sigma-bar from math.sqrt of floats", '''
def ddim_as_euler(x_t, eps_hat, abar_t, abar_prev):
    a, a_prev = float(abar_t), float(abar_prev)
    sigma, sigma_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)
    return math.sqrt(a_prev) * (x_t / math.sqrt(a) + (sigma_prev - sigma) * eps_hat)
''', CORRECT),
        ("ddim_as_euler", "sigma-bar without the square root", '''
def ddim_as_euler(x_t, eps_hat, abar_t, abar_prev):
    sigma_bar_t, sigma_bar_prev = (1 - abar_t) / abar_t, (1 - abar_prev) / abar_prev
    return abar_prev.sqrt() * (x_t / abar_t.sqrt() + (sigma_bar_prev - sigma_bar_t) * eps_hat)
''', WRONG),
        ("ddim_as_euler", "the step in x-bar, not mapped back to x", '''
def ddim_as_euler(x_t, eps_hat, abar_t, abar_prev):
    sigma_bar_t, sigma_bar_prev = ((1 - abar_t) / abar_t).sqrt(), ((1 - abar_prev) / abar_prev).sqrt()
    return x_t / abar_t.sqrt() + (sigma_bar_prev - sigma_bar_t) * eps_hat
''', WRONG),
        ("ddim_as_euler", "the step taken the wrong way (sigma_t - sigma_prev)", '''
def ddim_as_euler(x_t, eps_hat, abar_t, abar_prev):
    sigma_bar_t, sigma_bar_prev = ((1 - abar_t) / abar_t).sqrt(), ((1 - abar_prev) / abar_prev).sqrt()
    return abar_prev.sqrt() * (x_t / abar_t.sqrt() + (sigma_bar_t - sigma_bar_prev) * eps_hat)
''', WRONG),
        ("interpolate", "torch.lerp, and the target as -(x0 - noise)", '''
def interpolate(x0, noise, t):
    return torch.lerp(x0, noise, t.reshape((-1,) + (1,) * (x0.dim() - 1)))


def velocity_target(x0, noise):
    return -(x0 - noise)
''', CORRECT),
        ("interpolate", "x0 + t (noise - x0) with t indexed by None", '''
def interpolate(x0, noise, t):
    t = t[(...,) + (None,) * (x0.ndim - 1)]
    return x0 + t * (noise - x0)


def velocity_target(x0, noise):
    return noise - x0
''', CORRECT),
        ("interpolate", "t and 1 - t swapped", '''
def interpolate(x0, noise, t):
    t = t.view(-1, *[1] * (x0.ndim - 1))
    return t * x0 + (1 - t) * noise


def velocity_target(x0, noise):
    return noise - x0
''', WRONG),
        ("interpolate", "t[:, None], which only broadcasts for points", '''
def interpolate(x0, noise, t):
    return (1 - t[:, None]) * x0 + t[:, None] * noise


def velocity_target(x0, noise):
    return noise - x0
''', WRONG),
        ("interpolate", "the velocity from noise to data", '''
def interpolate(x0, noise, t):
    t = t.view(-1, *[1] * (x0.ndim - 1))
    return (1 - t) * x0 + t * noise


def velocity_target(x0, noise):
    return x0 - noise
''', WRONG),
        ("flow_matching_loss", "the mean of squares written out", '''
def flow_matching_loss(model, x0, noise, t):
    prediction = model(interpolate(x0, noise, t), t)
    return ((prediction - velocity_target(x0, noise)) ** 2).mean()
''', CORRECT),
        ("flow_matching_loss", "the noise as the target, as in Lab 2", '''
def flow_matching_loss(model, x0, noise, t):
    return F.mse_loss(model(interpolate(x0, noise, t), t), noise)
''', WRONG),
        ("flow_matching_loss", "the model called on the clean data", '''
def flow_matching_loss(model, x0, noise, t):
    return F.mse_loss(model(x0, t), velocity_target(x0, noise))
''', WRONG),
        ("flow_matching_loss", "the model told 1 - t", '''
def flow_matching_loss(model, x0, noise, t):
    return F.mse_loss(model(interpolate(x0, noise, t), 1 - t), velocity_target(x0, noise))
''', WRONG),
        ("euler_sample", "a while loop with dt = 1 / n", '''
def euler_sample(velocity, x_1, n_steps):
    dt, x, i = 1.0 / n_steps, x_1.clone(), 0
    while i < n_steps:
        t = torch.ones(x.shape[0], dtype=x.dtype, device=x.device) * (1 - i * dt)
        x = x - dt * velocity(x, t)
        i += 1
    return x
''', CORRECT),
        ("euler_sample", "float64 grid, in-place updates on a copy", '''
def euler_sample(velocity, x_1, n_steps):
    grid = torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64)
    x = x_1.clone()
    for i in range(n_steps):
        t = grid[i].to(x.dtype).expand(x.shape[0]).contiguous()
        x += (grid[i + 1] - grid[i]).item() * velocity(x, t)
    return x
''', CORRECT),
        ("euler_sample", "in-place updates on x_1 itself", '''
def euler_sample(velocity, x_1, n_steps):
    times = torch.linspace(1, 0, n_steps + 1).tolist()
    x = x_1
    for t, t_prev in zip(times[:-1], times[1:]):
        x += (t_prev - t) * velocity(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device))
    return x
''', WRONG),
        ("euler_sample", "the velocity taken at the step's end", '''
def euler_sample(velocity, x_1, n_steps):
    times = torch.linspace(1, 0, n_steps + 1).tolist()
    x = x_1
    for t, t_prev in zip(times[:-1], times[1:]):
        x = x + (t_prev - t) * velocity(x, torch.full((len(x),), t_prev, dtype=x.dtype, device=x.device))
    return x
''', WRONG),
        ("euler_sample", "time running from 0 to 1", '''
def euler_sample(velocity, x_1, n_steps):
    times = torch.linspace(0, 1, n_steps + 1).tolist()
    x = x_1
    for t, t_next in zip(times[:-1], times[1:]):
        x = x - (t_next - t) * velocity(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device))
    return x
''', WRONG),
        ("euler_sample", "one call too many (a step at t = 0)", '''
def euler_sample(velocity, x_1, n_steps):
    x, dt = x_1, 1.0 / n_steps
    for t in torch.linspace(1, 0, n_steps + 1).tolist():
        x = x - dt * velocity(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device))
    return x
''', WRONG),
        ("heun_step", "the average written as the mean of two Euler steps", '''
def heun_step(velocity, x_t, t, t_prev):
    h = t_prev - t
    times = lambda s: s * torch.ones(x_t.shape[0], dtype=x_t.dtype, device=x_t.device)
    x_euler = x_t + h * velocity(x_t, times(t))
    return 0.5 * (x_t + x_euler + h * velocity(x_euler, times(t_prev)))
''', CORRECT),
        ("heun_step", "the second velocity at t instead of t_prev", '''
def heun_step(velocity, x_t, t, t_prev):
    h = t_prev - t
    times = torch.full((len(x_t),), t, dtype=x_t.dtype, device=x_t.device)
    v_start = velocity(x_t, times)
    v_end = velocity(x_t + h * v_start, times)
    return x_t + h * (v_start + v_end) / 2
''', WRONG),
        ("heun_step", "the corrected step taken from the trial point", '''
def heun_step(velocity, x_t, t, t_prev):
    h = t_prev - t
    v_start = velocity(x_t, torch.full((len(x_t),), t, dtype=x_t.dtype, device=x_t.device))
    x_trial = x_t + h * v_start
    v_end = velocity(x_trial, torch.full((len(x_t),), t_prev, dtype=x_t.dtype, device=x_t.device))
    return x_trial + h * (v_start + v_end) / 2
''', WRONG),
        ("heun_step", "the midpoint method instead of Heun's", '''
def heun_step(velocity, x_t, t, t_prev):
    h = t_prev - t
    v_start = velocity(x_t, torch.full((len(x_t),), t, dtype=x_t.dtype, device=x_t.device))
    x_mid = x_t + h / 2 * v_start
    return x_t + h * velocity(x_mid, torch.full((len(x_t),), t + h / 2, dtype=x_t.dtype, device=x_t.device))
''', WRONG),
        ("reflow_pairs", "the samples detached after sampling", '''
def reflow_pairs(velocity, noise, n_steps):
    return noise, euler_sample(velocity, noise, n_steps).detach()
''', CORRECT),
        ("reflow_pairs", "under torch.inference_mode", '''
def reflow_pairs(velocity, noise, n_steps):
    with torch.inference_mode():
        sprites = euler_sample(velocity, noise, n_steps)
    return (noise, sprites)
''', CORRECT),
        ("reflow_pairs", "(samples, noise): the pair the wrong way round", '''
def reflow_pairs(velocity, noise, n_steps):
    with torch.no_grad():
        samples = euler_sample(velocity, noise, n_steps)
    return samples, noise
''', WRONG),
        ("reflow_pairs", "fresh noise beside the samples: no coupling", '''
def reflow_pairs(velocity, noise, n_steps):
    with torch.no_grad():
        samples = euler_sample(velocity, noise, n_steps)
    return torch.randn_like(noise), samples
''', WRONG),
        ("reflow_pairs", "a single Euler step whatever n_steps is", '''
def reflow_pairs(velocity, noise, n_steps):
    with torch.no_grad():
        samples = euler_sample(velocity, noise, 1)
    return noise, samples
''', WRONG),
        ("reflow_pairs", "the pairs keep the graph (no torch.no_grad)", '''
def reflow_pairs(velocity, noise, n_steps):
    return noise, euler_sample(velocity, noise, n_steps)
''', WRONG),
        ("straightness", "the variance over steps (population), averaged per path", '''
def straightness(velocities):
    return velocities.var(dim=0, unbiased=False).reshape(velocities.shape[1], -1).mean(dim=1)
''', CORRECT),
        ("straightness", "a loop over steps against the displacement", '''
def straightness(velocities):
    n = velocities.shape[0]
    displacement = sum(velocities[i] for i in range(n)) / n
    total = 0
    for i in range(n):
        total = total + ((velocities[i] - displacement) ** 2).flatten(1).mean(dim=1)
    return total / n
''', CORRECT),
        ("straightness", "the deviation from the first step's velocity", '''
def straightness(velocities):
    return (velocities - velocities[0]).pow(2).flatten(2).mean(dim=(0, 2))
''', WRONG),
        ("straightness", "summed over dimensions instead of averaged", '''
def straightness(velocities):
    deviation = velocities - velocities.mean(dim=0, keepdim=True)
    return deviation.pow(2).flatten(2).sum(dim=2).mean(dim=0)
''', WRONG),
        ("straightness", "one number for the whole batch", '''
def straightness(velocities):
    return (velocities - velocities.mean(dim=0, keepdim=True)).pow(2).mean()
''', WRONG),
        ("straightness", "the sample variance (divides by N - 1)", '''
def straightness(velocities):
    return velocities.var(dim=0).flatten(1).mean(dim=1)
''', WRONG),
    ],
}


class LabSession:
    """A solution notebook's cells run in one namespace, as the autograder's kernel would hold them."""

    def __init__(self, lab: str, workdir: Path):
        self.lab, self.workdir = lab, workdir
        cells = json.loads((ROOT / "solutions" / lab / f"{lab}.ipynb").read_text())["cells"]
        self.cells = {grade_id(c): "".join(c["source"]) for c in cells if grade_id(c)}
        self.namespace: dict = {"__name__": "__main__"}
        for index, cell in enumerate(cells):
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or (source.startswith("# long-running") and not grade_id(cell)):
                continue
            try:
                self.run(source, f"{lab} cell {index}")
            except Exception:
                if grade_id(cell):  # the reference must pass every graded cell
                    raise
                # a demo cell that drew on a skipped long-running cell; nothing graded needs it

    @contextlib.contextmanager
    def quick_mode(self):
        saved_env, saved_dir = os.environ.get("NBGRADER_EXECUTION"), Path.cwd()
        os.environ["NBGRADER_EXECUTION"] = "autograde"
        os.chdir(self.workdir)  # files a cell writes (Lab 2's checkpoint) land here
        try:
            yield
        finally:
            os.chdir(saved_dir)
            if saved_env is None:
                os.environ.pop("NBGRADER_EXECUTION", None)
            else:
                os.environ["NBGRADER_EXECUTION"] = saved_env

    def run(self, source: str, name: str) -> None:
        try:
            with self.quick_mode():
                exec(compile(source, name, "exec"), self.namespace)
        finally:
            plt.close("all")  # a kernel shows each figure once; here they would pile up

    def graded_cell_passes(self, answer_id: str, answer: str) -> bool:
        """Whether the graded test cell after `answer_id` passes with `answer` in its place."""
        self.run(answer, f"{self.lab} variant of {answer_id}")
        try:
            self.run(self.cells[f"test_{answer_id}"], f"{self.lab} test_{answer_id}")
            return True
        except Exception:
            return False
        finally:
            self.run(self.cells[answer_id], f"{self.lab} {answer_id}")  # the reference answer back


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    opened: dict[str, LabSession] = {}

    def session(lab: str) -> LabSession:
        if lab not in opened:
            opened[lab] = LabSession(lab, tmp_path_factory.mktemp(lab))
        return opened[lab]

    return session


CASES = [(lab, *variant) for lab, variants in VARIANTS.items() for variant in variants]


@pytest.mark.parametrize(
    "lab, answer_id, description, source, must_pass", CASES,
    ids=[f"{lab}-{answer_id}-{'correct' if ok else 'wrong'}: {what}" for lab, answer_id, what, _, ok in CASES],
)
def test_graded_cell_judges_the_answer(sessions, lab, answer_id, description, source, must_pass):
    session = sessions(lab)
    assert f"test_{answer_id}" in session.cells, f"{lab} has no graded cell test_{answer_id}"
    passed = session.graded_cell_passes(answer_id, source)
    if must_pass:
        assert passed, f"{lab}: a correct answer ({description}) fails test_{answer_id}"
    else:
        assert not passed, f"{lab}: a wrong answer ({description}) passes test_{answer_id}"


def test_every_exercise_has_a_wrong_variant():
    """Each graded answer is checked against at least one plausible slip."""
    for lab in LABS:
        cells = json.loads((ROOT / "solutions" / lab / f"{lab}.ipynb").read_text())["cells"]
        answers = {grade_id(c) for c in cells if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"}
        answers = {a for a in answers if any(grade_id(c) == f"test_{a}" for c in cells)}
        covered = {(answer_id, ok) for answer_id, _, _, ok in VARIANTS.get(lab, [])}
        for answer in answers:
            assert (answer, WRONG) in covered, f"{lab}: no wrong variant of {answer} is checked"
