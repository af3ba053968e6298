"""Distillation: students that sample in 1 to 8 steps (Lab 6).

  python -m tools.distill knowledge   --convert-steps 1000                 # Luhman & Luhman 2021
  python -m tools.distill progressive --rounds 8,4,2,1 --convert-steps 1000   # Salimans & Ho 2022
(weights/manifest.json records the exact command of every shipped student)

Knowledge distillation runs the deterministic teacher (DPM-Solver++ from Lab 4)
from many noises to their sprites once, then teaches a student to jump from a
noise to its sprite in one network call.

Progressive distillation halves the number of steps per round. In a round the
student, starting from its teacher's weights, learns to land with one DDIM step
where the teacher lands with two. The first round's teacher is the base model
itself, which takes each of its "steps" as a few DPM-Solver++ steps (a finer,
more accurate grid); every later round's teacher is the previous student.

Students are ordinary `Denoiser`s that predict v rather than the noise: turning
a noise prediction into a sprite divides by sqrt(abar_t), 0.01 at t = T, which
would blow up a one-step student's every error a hundredfold. Each starts from
its teacher's weights. The base model predicts the noise, so a student copied
from it starts out wrong wherever v and the noise differ (at high t, everywhere:
there v is about -x0). With --convert-steps N the copy first re-learns to predict
v by N steps of ordinary denoising training (Ho et al. 2020, with the v target);
the first student then starts from a model that already samples like its
teacher, and spends its round on the distillation alone.
A student runs only on its own grid of timesteps, saved in its manifest entry
under "sampling"; `student_sampler` rebuilds it.

With --own-levels, a student step starting at one of those timesteps gets its own
copy of the round's network, trained --own-network-steps more steps on that step
alone (a StepwiseDenoiser). The four-step student's second step, where the
sprite's layout is decided, misses its teacher far more than the others; its
own copy misses less, and sampling still costs one network call per step. The
next round starts again from the shared network. Copies of one network
fine-tuned for different noise levels are eDiff-I's "ensemble of expert
denoisers" (Balaji et al. 2022); Song et al. 2024 (multi-student distillation)
split a one-step student's work among several students by condition instead.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from shared.data import load_sprites
from shared.device import pick_device
from shared.distillation import ddim_x0_target, make_student, run_teacher, sigma_alpha, student_sampler
from shared.model import Denoiser, StepwiseDenoiser, StepwiseDenoiserConfig
from shared.samplers import DDIMSampler, DPMSolverSampler, generate, timestep_grid
from shared.schedule import NoiseSchedule
from shared.weights import load_model, manifest_entry

from . import save_model
from .train import denoising_loss, draw_denoising_batch, learning_rate, settings_problem, update_weights


def landing_factor(schedule: NoiseSchedule, t: int, t_target: int) -> float:
    """How far one DDIM step from t lands from its mark at t_target per unit of error in x0: alpha' - sigma' alpha / sigma.

    A progressive student's loss weighs its x0 error by the square of this, so it is the squared miss where
    the step lands. The misses of a student's steps add up along its path (each lands where the next starts),
    so that is the error to share out between the steps. The plain x0 error would over-weight the first steps,
    whose x0 errors move their landing point 5 to 20 times less; Salimans & Ho's truncated-SNR weights, made
    for training at every t, favour the last steps 100-fold over the middle ones, where a student misses most.
    """
    (sigma, alpha), (sigma_next, alpha_next) = sigma_alpha(schedule, t), sigma_alpha(schedule, t_target)
    return float(alpha_next - sigma_next * alpha / sigma)


def predicted_x0(model, schedule, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0_hat of a student at per-row timesteps t (B,)."""
    return schedule.eps_and_x0(model(x_t, t), model.config.prediction, x_t, t)[1]


@dataclass
class Distillation:
    name: str
    method: str  # "knowledge" or "progressive"
    teacher: str = "unconditional"
    steps: int = 700  # optimisation steps (per round for progressive)
    batch_size: int = 128
    lr: float = 5e-4
    warmup_steps: int = 50
    ema_decay: float = 0.995
    base_steps: int = 32  # progressive from a base model: DPM-Solver++ steps of the finest grid
    pairs: int = 16384  # knowledge: (noise, teacher sprite) pairs
    pair_steps: int = 20  # knowledge: DPM-Solver++ steps that make each teacher sprite
    convert_steps: int = 0  # denoising steps that first teach the copied base model to predict v (0: none)
    own_levels: str = ""  # progressive: comma-separated timesteps whose student step gets its own copy of the network
    own_network_steps: int = 2000  # optimisation steps of each such copy, on its step alone
    seed: int = 0
    threads: int = 2


def fit(student, run: Distillation, loss_of_batch, desc: str, steps: int | None = None):
    """Adam with warm-up and cosine decay over `steps` (run.steps by default);
    returns the EMA of the student, the mean final loss and the seconds taken."""
    steps = run.steps if steps is None else steps
    ema = copy.deepcopy(student).eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=run.lr, weight_decay=0.0)
    losses, start = [], time.perf_counter()
    for step in (progress := tqdm(range(steps), desc=desc)):
        loss = loss_of_batch(step)
        update_weights(student, ema, optimizer, loss, learning_rate(step, steps, run.lr, run.warmup_steps), step, run.ema_decay)
        losses.append(loss.item())
        if step % 25 == 0:
            progress.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.4f}")
    final = sum(losses[-100:]) / len(losses[-100:])
    return ema, round(final, 6), round(time.perf_counter() - start, 1)


def v_predicting_copy(teacher: Denoiser, schedule: NoiseSchedule, images: torch.Tensor, run: Distillation, generator) -> tuple[Denoiser, float]:
    """A copy of a noise-predicting teacher, trained run.convert_steps steps on the sprites to predict v instead."""
    student = make_student(teacher)
    if run.convert_steps == 0 or teacher.config.prediction == "v":
        return student, 0.0
    device = images.device
    no_context = torch.zeros(run.batch_size, teacher.config.context_dim, device=device)
    drop_all = torch.ones(run.batch_size, dtype=torch.bool, device=device)

    def loss_of_batch(step):
        index, t, noise = draw_denoising_batch(images, run.batch_size, schedule.T, generator)
        return denoising_loss(student, schedule, images[index], no_context, t, noise, drop_all)

    ema, final, seconds = fit(student, run, loss_of_batch, "re-learning to predict v", steps=run.convert_steps)
    print(f"predicting v after {run.convert_steps} steps in {seconds:.0f} s, final loss {final:.4f}", flush=True)
    return ema.train(), seconds


def distill_knowledge(run: Distillation, command: str) -> None:
    device = pick_device()
    teacher = load_model(run.teacher, device).requires_grad_(False)
    schedule = teacher.schedule
    generator = torch.Generator().manual_seed(run.seed)
    noise = torch.randn(run.pairs, 3, 16, 16, generator=generator)
    start = time.perf_counter()
    samples = torch.cat([
        # the plain log-SNR grid that the shipped knowledge_1step was trained with, so its command re-makes it
        generate(teacher, DPMSolverSampler(schedule, spacing="logsnr"), noise[i : i + 512], run.pair_steps, progress=False).images
        for i in tqdm(range(0, run.pairs, 512), desc="teacher pairs")
    ])
    pair_seconds = time.perf_counter() - start
    noise, samples = noise.to(device), samples.to(device)
    images = load_sprites("train").images.to(device) if run.convert_steps else None
    student, convert_seconds = v_predicting_copy(teacher, schedule, images, run, generator)
    T = schedule.T

    def loss_of_batch(step):
        index = torch.randint(run.pairs, (run.batch_size,), generator=generator).to(device)
        t = torch.full((run.batch_size,), T, dtype=torch.long, device=device)
        return F.mse_loss(predicted_x0(student, schedule, noise[index], t), samples[index])

    ema, final, seconds = fit(student, run, loss_of_batch, f"distilling {run.name}")
    save_model(ema, run.name, "denoiser", {
        "train_command": command,
        "training": asdict(run),
        "sampling": {"sampler": "ddim", "levels": [T, 0], "clip_x0": False},
        "training_time_s": round(seconds + pair_seconds + convert_seconds, 1),
        "final_loss": final,
        "device": str(device),
        "torch": torch.__version__,
    })
    print(f"{run.name}: {run.pairs} pairs in {pair_seconds:.0f} s, {run.steps} steps in {seconds:.0f} s, final loss {final:.4f}")


def student_segments(teacher_levels: list[int], n_student: int) -> list[list[int]]:
    """The teacher's levels that each of n_student student steps spans, first level to last."""
    n_teacher = len(teacher_levels) - 1
    if n_teacher % n_student:
        raise ValueError(f"{n_student} student steps do not divide the teacher's {n_teacher}")
    stride = n_teacher // n_student
    return [teacher_levels[i * stride : (i + 1) * stride + 1] for i in range(n_student)]


def step_batch(teacher, teacher_sampler, segment: list[int], schedule, x0: torch.Tensor, noise: torch.Tensor):
    """One student step's training rows: x_t (x0 noised to segment[0]), its timesteps, and the target
    x0 whose single DDIM step lands where the teacher's steps through `segment` land."""
    t, t_next = segment[0], segment[-1]
    t_batch = torch.full((len(x0),), t, dtype=torch.long, device=x0.device)
    x_t = schedule.add_noise(x0, t_batch, noise)
    x_next = run_teacher(teacher, teacher_sampler, segment, x_t)
    return x_t, t_batch, ddim_x0_target(schedule, x_t, t, x_next, t_next)


def random_rows(images, n: int, generator, device):
    """n training sprites and n noises, drawn with `generator`."""
    index = torch.randint(len(images), (n,), generator=generator).to(device)
    return images[index], torch.randn(n, 3, 16, 16, generator=generator).to(device)


def progressive_round(teacher, student, teacher_sampler, teacher_levels, n_student, schedule, images, run, generator, device):
    """One round: `student` (a v-predicting copy of the teacher) learns to take every
    (len(teacher_levels)-1)/n_student-th teacher level, matching the teacher between them."""
    segments = student_segments(teacher_levels, n_student)
    per_step = run.batch_size // n_student  # every batch covers every student step equally

    def loss_of_batch(step):
        x0, noise = random_rows(images, per_step * n_student, generator, device)
        inputs, targets, ts, weights = [], [], [], []
        for i, segment in enumerate(segments):
            rows = slice(i * per_step, (i + 1) * per_step)
            x_t, t, target = step_batch(teacher, teacher_sampler, segment, schedule, x0[rows], noise[rows])
            inputs.append(x_t)
            targets.append(target)
            ts.append(t)
            weights.append(torch.full((per_step,), landing_factor(schedule, segment[0], segment[-1]) ** 2, device=device))
        x_t, target, t, weight = torch.cat(inputs), torch.cat(targets), torch.cat(ts), torch.cat(weights)
        error = (predicted_x0(student, schedule, x_t, t) - target).pow(2).mean(dim=(1, 2, 3))
        return (weight * error).mean()

    ema, final, seconds = fit(student, run, loss_of_batch, f"distilling {len(teacher_levels) - 1} -> {n_student} steps")
    return ema, [segment[0] for segment in segments] + [0], final, seconds


def give_own_networks(student, segments, own_levels, teacher, teacher_sampler, schedule, images, run, device):
    """The round's `student`, shared by its steps, plus for each step starting at one of `own_levels` a copy
    of it trained run.own_network_steps more steps on that step alone: a StepwiseDenoiser, with
    {level: final loss} and the seconds taken.

    The copies are for sampling with this student only: the next round starts from, and is taught by,
    the shared network. They draw from their own random generators, so the rounds that follow draw
    the same batches with or without them."""
    # copies only where this student has a step: a level listed for another round's student gets none here
    owned = [segment for segment in segments if segment[0] in own_levels]
    config = StepwiseDenoiserConfig(**asdict(student.config), own_levels=tuple(segment[0] for segment in owned))
    stepwise = StepwiseDenoiser(config).to(device)
    stepwise.shared.load_state_dict(student.state_dict())
    losses, seconds = {}, 0.0
    for segment in owned:
        network = copy.deepcopy(student).train().requires_grad_(True)
        generator = torch.Generator().manual_seed(run.seed + segment[0])
        weight = landing_factor(schedule, segment[0], segment[-1]) ** 2

        def loss_of_batch(step, network=network, segment=segment, weight=weight, generator=generator):
            x0, noise = random_rows(images, run.batch_size, generator, device)
            x_t, t, target = step_batch(teacher, teacher_sampler, segment, schedule, x0, noise)
            return weight * (predicted_x0(network, schedule, x_t, t) - target).pow(2).mean()

        ema, losses[segment[0]], taken = fit(network, run, loss_of_batch, f"own network for t = {segment[0]}", steps=run.own_network_steps)
        stepwise.own[str(segment[0])].load_state_dict(ema.state_dict())
        seconds += taken
    return stepwise.eval(), losses, seconds


def round_teacher(name: str, schedule: NoiseSchedule, base_steps: int, device="cpu"):
    """A progressive round's teacher as (model, sampler, levels): a shipped student on its own grid
    (its shared network, if it has copies of its own for some steps: the chain continues from that),
    or a base model taking DPM-Solver++ steps on a finer log-SNR grid of `base_steps` steps."""
    entry = manifest_entry(name)
    teacher = load_model(name, device).requires_grad_(False)
    if isinstance(teacher, StepwiseDenoiser):
        teacher = teacher.shared
    if "sampling" in entry:  # continue from a shipped student
        return teacher, student_sampler(entry, schedule), entry["sampling"]["levels"]
    return teacher, DPMSolverSampler(schedule), timestep_grid(schedule, base_steps, "logsnr")


def distill_progressive(run: Distillation, rounds: list[int], command: str) -> None:
    device = pick_device()
    entry = manifest_entry(run.teacher)
    schedule = NoiseSchedule(entry["config"]["T"], entry["config"]["schedule"]).to(device)
    teacher, teacher_sampler, teacher_levels = round_teacher(run.teacher, schedule, run.base_steps, device)
    own_levels = parse_levels(run.own_levels)
    step_starts = {segment[0] for n in rounds for segment in student_segments(teacher_levels, n)}
    if not own_levels <= step_starts:
        raise ValueError(f"--own-levels {run.own_levels}: the students' steps start only at {sorted(step_starts, reverse=True)}")
    generator = torch.Generator().manual_seed(run.seed)
    images = load_sprites("train").images.to(device)
    student, convert_seconds = v_predicting_copy(teacher, schedule, images, run, generator)
    # From the base model, across commands; a stepwise teacher passes on only its shared network, not its copies.
    total = entry.get("cumulative_training_time_s", 0.0) - entry.get("own_networks_training_time_s", 0.0)
    for n_student in rounds:
        student, levels, final, seconds = progressive_round(
            teacher, student, teacher_sampler, teacher_levels, n_student, schedule, images, run, generator, device)
        seconds, convert_seconds = seconds + convert_seconds, 0.0  # the conversion counts in round 1's time
        shipped, own, own_seconds = student, {}, 0.0
        if own_levels & set(levels[:-1]):
            shipped, own, own_seconds = give_own_networks(student, student_segments(teacher_levels, n_student), own_levels,
                                                          teacher, teacher_sampler, schedule, images, run, device)
        total += seconds  # the own networks are not part of the later students' making
        seconds += own_seconds
        name = f"{run.name}_{n_student}step"
        save_model(shipped, name, "stepwise_denoiser" if own else "denoiser", {
            "train_command": command,
            "training": {**asdict(run), "rounds": rounds},
            "sampling": {"sampler": "ddim", "levels": levels, "clip_x0": False},
            "distilled_from": f"{run.teacher} ({len(teacher_levels) - 1} steps)" if n_student == rounds[0] else f"{run.name}_{len(teacher_levels) - 1}step",
            "training_time_s": round(seconds, 1),
            "cumulative_training_time_s": round(total + own_seconds, 1),
            "final_loss": final,
            **({"own_network_final_losses": {str(level): loss for level, loss in own.items()},
                "own_networks_training_time_s": round(own_seconds, 1)} if own else {}),
            "device": str(device),
            "torch": torch.__version__,
        })
        print(f"{name}: grid {levels}, {run.steps} steps in {seconds:.0f} s, final loss {final:.5f}"
              + "".join(f"; own network at t = {level}: final loss {loss:.5f}" for level, loss in own.items()), flush=True)
        teacher = student.requires_grad_(False)
        teacher_sampler = DDIMSampler(schedule, clip_x0=False, levels=levels)
        teacher_levels = levels
        student = make_student(teacher)


def parse_levels(text: str) -> set[int]:
    """Timesteps from comma-separated words, like "445" or "445,207"; "" for none."""
    try:
        return {int(word) for word in text.split(",") if word.strip()}
    except ValueError:
        raise ValueError(f"levels must be comma-separated integers like 445,207; got {text!r}") from None


def parse_arguments(argv: list[str]) -> tuple[Distillation, list[int]]:
    """The run's settings and the progressive rounds from command-line words; every setting has a flag."""
    parser = argparse.ArgumentParser(prog="python -m tools.distill", description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=["knowledge", "progressive"])
    parser.add_argument("--rounds", default="8,4,2,1", help="progressive: student step counts, each half the last (default 8,4,2,1)")
    for key, value in asdict(Distillation(name="", method="")).items():
        if key != "method":
            parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=None if key == "name" else value)
    args = vars(parser.parse_args(argv))
    method, rounds = args.pop("method"), [int(r) for r in args.pop("rounds").split(",") if r]
    problem = settings_problem(args)
    if problem:
        parser.error(problem)
    if method == "progressive" and any(a != 2 * b for a, b in zip(rounds, rounds[1:])):
        parser.error(f"--rounds must halve each time, like 8,4,2,1; got {rounds}")
    try:
        parse_levels(args["own_levels"])
    except ValueError as error:
        parser.error(f"--own-levels: {error}")
    args["name"] = args["name"] or {"knowledge": "knowledge_1step", "progressive": "progressive"}[method]
    return Distillation(method=method, **args), rounds


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run, rounds = parse_arguments(argv)
    torch.set_num_threads(run.threads)
    torch.manual_seed(run.seed)
    command = "python -m tools.distill " + shlex.join(argv)
    if run.method == "knowledge":
        distill_knowledge(run, command)
    else:
        distill_progressive(run, rounds, command)


if __name__ == "__main__":
    main()
