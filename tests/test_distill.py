"""Distillation (Lab 6): v-prediction, the round's target, the re-training commands, and the shipped students."""

import shlex
from dataclasses import asdict

import pytest
import torch

import shared.weights as weights
from tools import distill
from shared.metrics import nearest_training_distance
from shared.samplers import DDIMSampler, DPMSolverSampler, generate
from shared.schedule import NoiseSchedule
from shared.weights import available_weights, load_model, manifest_entry

STUDENTS = ["progressive_8step", "progressive_4step", "progressive_2step", "progressive_1step", "knowledge_1step"]


@pytest.fixture(scope="module")
def q64():
    return NoiseSchedule(500, "cosine", dtype=torch.float64)


def test_v_prediction_inverts_exactly(q64):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(4, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1, torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 100, 499, 500])
    x_t = q64.add_noise(x0, t, eps)
    v = q64.at("sqrt_alpha_bars", t) * eps - q64.at("sqrt_one_minus_alpha_bars", t) * x0
    eps_hat, x0_hat = q64.eps_and_x0(v, "v", x_t, t)
    assert torch.allclose(x0_hat, x0, atol=1e-10) and torch.allclose(eps_hat, eps, atol=1e-10)


def test_ddim_step_with_the_target_lands_on_the_teacher(q64):
    g = torch.Generator().manual_seed(1)
    x_t, x_target = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64), torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    sampler = DDIMSampler(q64, clip_x0=False)
    for t, t_next in [(500, 300), (300, 20), (20, 3)]:
        x0_target = distill.ddim_x0_target(q64, x_t, t, x_target, t_next)
        landed, _ = sampler.step(x0_target, t, t_next, x_t, prediction="x0")
        assert torch.allclose(landed, x_target, atol=1e-8), (t, t_next)
    assert torch.equal(distill.ddim_x0_target(q64, x_t, 40, x_target, 0), x_target)


def test_landing_factor_is_how_far_a_ddim_step_moves_per_unit_of_x0_error(q64):
    g = torch.Generator().manual_seed(6)
    x_t, x0, delta = (torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(3))
    sampler = DDIMSampler(q64, clip_x0=False)
    for t, t_next in [(500, 479), (357, 207), (29, 9), (9, 0)]:
        landed, _ = sampler.step(x0, t, t_next, x_t, prediction="x0")
        moved, _ = sampler.step(x0 + delta, t, t_next, x_t, prediction="x0")
        assert torch.allclose(moved - landed, distill.landing_factor(q64, t, t_next) * delta, atol=1e-9), (t, t_next)
    assert distill.landing_factor(q64, 40, 0) == pytest.approx(1.0)


def test_run_teacher_restarts_a_multistep_solver_for_each_segment():
    schedule = NoiseSchedule(500, "cosine")
    teacher = load_model("unconditional")
    solver = DPMSolverSampler(schedule)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    first = distill.run_teacher(teacher, solver, [500, 300, 200], x)
    # The solver now remembers a step ending at 200; a new segment starting at 200 must not continue it.
    again = distill.run_teacher(teacher, solver, [500, 300, 200], x)
    assert torch.equal(first, again)
    fresh = distill.run_teacher(teacher, DPMSolverSampler(schedule), [200, 100], first)
    continued = distill.run_teacher(teacher, solver, [200, 100], first)
    assert torch.equal(fresh, continued)


def test_make_student_copies_the_teacher_and_predicts_v():
    teacher = load_model("unconditional")
    student = distill.make_student(teacher)
    assert student.config.prediction == "v" and teacher.config.prediction == "eps"
    for (name, a), b in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert torch.equal(a, b), name
    assert student.training and any(p.requires_grad for p in student.parameters())


def test_predict_v_retrains_a_copy_of_a_noise_predicting_teacher():
    schedule = NoiseSchedule(500, "cosine")
    teacher = load_model("unconditional")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    images = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    plain, seconds = distill.v_predicting_copy(teacher, schedule, images, distill.Distillation("x", "progressive", convert_steps=0), torch.Generator())
    assert seconds == 0 and plain.config.prediction == "v"
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), plain.state_dict().values()))

    def v_loss(model):  # the denoising loss with the v target on fixed noisy sprites
        g = torch.Generator().manual_seed(4)
        t, noise = torch.randint(1, 501, (64,), generator=g), torch.randn(64, 3, 16, 16, generator=g)
        with torch.no_grad():
            return distill.denoising_loss(model, schedule, images, torch.zeros(64, 9), t, noise, torch.ones(64, dtype=torch.bool)).item()

    run = distill.Distillation("x", "progressive", convert_steps=40, batch_size=16, lr=1e-3, warmup_steps=5)
    converted, _ = distill.v_predicting_copy(teacher, schedule, images, run, torch.Generator().manual_seed(5))
    assert converted.config.prediction == "v" and converted.training
    assert v_loss(converted) < 0.7 * v_loss(plain)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), "the teacher must stay as it was"


@pytest.mark.parametrize(
    "argv, message",
    [(["progressive", "--rounds", "8,3"], "must halve"), (["magic"], "invalid choice"),
     (["progressive", "--own-levels", "445,x"], "comma-separated integers"),
     (["knowledge", "--steps", "0"], "--steps must be positive"), (["knowledge", "--name", "a/b"], "--name must be letters")],
)
def test_bad_distillation_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        distill.parse_arguments(argv)
    assert message in capsys.readouterr().err


@pytest.fixture
def private_weights(tmp_path, monkeypatch):
    """A weights folder holding only a copy of the teacher, so tiny runs do not touch the shipped manifest."""
    import json
    import shutil

    entry = manifest_entry("unconditional")
    shutil.copy(weights.WEIGHTS_DIR / entry["file"], tmp_path / entry["file"])
    (tmp_path / "manifest.json").write_text(json.dumps({"unconditional": entry}))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights, "MANIFEST_PATH", tmp_path / "manifest.json")
    return tmp_path


def test_tiny_progressive_run_ships_a_student_per_round(private_weights):
    distill.main(["progressive", "--rounds", "4,2", "--steps", "2", "--batch-size", "8", "--base-steps", "8"])
    assert set(available_weights()) == {"unconditional", "progressive_4step", "progressive_2step"}
    four, two = manifest_entry("progressive_4step"), manifest_entry("progressive_2step")
    assert len(four["sampling"]["levels"]) == 5 and two["sampling"]["levels"] == four["sampling"]["levels"][::2]
    assert four["train_command"] == "python -m tools.distill progressive --rounds 4,2 --steps 2 --batch-size 8 --base-steps 8"
    schedule = NoiseSchedule(500, "cosine")
    noise = torch.randn(2, 3, 16, 16)
    run = generate(load_model("progressive_2step"), distill.student_sampler(two, schedule), noise, progress=False)
    assert run.images.shape == (2, 3, 16, 16) and torch.isfinite(run.images).all()


def test_tiny_progressive_run_gives_a_step_its_own_network(private_weights):
    from shared.model import StepwiseDenoiser
    from shared.samplers import timestep_grid

    schedule = NoiseSchedule(500, "cosine")
    four_levels = timestep_grid(schedule, 8, "logsnr")[::2]
    own_level, shared_level = four_levels[1], four_levels[2]  # the 4-step student's 2nd and 3rd steps start here; the 2-step's 2nd too
    with pytest.raises(ValueError, match="steps start only at"):
        distill.main(["progressive", "--rounds", "4,2", "--steps", "2", "--batch-size", "8", "--base-steps", "8", "--own-levels", "123"])
    distill.main(["progressive", "--rounds", "4,2", "--steps", "2", "--batch-size", "8", "--base-steps", "8",
                  "--own-levels", f"{own_level},{shared_level}", "--own-network-steps", "3"])
    four, two = manifest_entry("progressive_4step"), manifest_entry("progressive_2step")
    assert four["kind"] == "stepwise_denoiser" and four["config"]["own_levels"] == [own_level, shared_level]
    assert set(four["own_network_final_losses"]) == {str(own_level), str(shared_level)}
    # the 2-step student has no step at own_level, so it gets no copy for it
    assert two["kind"] == "stepwise_denoiser" and two["config"]["own_levels"] == [shared_level]
    assert set(two["own_network_final_losses"]) == {str(shared_level)}
    student = load_model("progressive_4step")
    assert isinstance(student, StepwiseDenoiser) and isinstance(load_model("progressive_2step"), StepwiseDenoiser)
    shared, own = student.shared.state_dict(), student.own[str(own_level)].state_dict()
    assert any(not torch.equal(shared[k], own[k]) for k in shared), "the own network trained on its step"
    copy = distill.make_student(student)  # the next round starts from the shared network
    assert all(torch.equal(shared[k], v) for k, v in copy.state_dict().items())
    run = generate(student, distill.student_sampler(four, schedule), torch.randn(2, 3, 16, 16), progress=False)
    assert torch.isfinite(run.images).all()
    # the copies' training time counts for their own file, but is not inherited by later students
    shared_time = four["cumulative_training_time_s"] - four["own_networks_training_time_s"]
    assert two["cumulative_training_time_s"] - two["own_networks_training_time_s"] == pytest.approx(
        shared_time + two["training_time_s"] - two["own_networks_training_time_s"], abs=0.25)
    distill.main(["progressive", "--teacher", "progressive_4step", "--rounds", "2", "--steps", "2", "--batch-size", "8", "--name", "again"])
    again = manifest_entry("again_2step")
    assert again["cumulative_training_time_s"] == pytest.approx(shared_time + again["training_time_s"], abs=0.25)


def test_tiny_progressive_run_with_a_v_conversion_first(private_weights):
    distill.main(["progressive", "--rounds", "2", "--steps", "2", "--batch-size", "4", "--base-steps", "4", "--convert-steps", "2"])
    entry = manifest_entry("progressive_2step")
    assert entry["training"]["convert_steps"] == 2 and entry["config"]["prediction"] == "v"
    assert entry["train_command"].endswith("--convert-steps 2")


def test_tiny_knowledge_run(private_weights):
    distill.main(["knowledge", "--name", "kd", "--steps", "2", "--batch-size", "4", "--pairs", "8", "--pair-steps", "2"])
    entry = manifest_entry("kd")
    assert entry["sampling"]["levels"] == [500, 0] and entry["config"]["prediction"] == "v"


def test_student_sampler_rejects_other_step_counts():
    schedule = NoiseSchedule(500, "cosine")
    sampler = distill.student_sampler(manifest_entry("progressive_4step"), schedule)
    assert len(sampler.timesteps()) == 4 and len(sampler.timesteps(4)) == 4
    with pytest.raises(ValueError, match="fixed grid of 4 steps"):
        sampler.timesteps(10)
    with pytest.raises(ValueError, match="not a distilled student"):
        distill.student_sampler(manifest_entry("unconditional"), schedule)
    with pytest.raises(ValueError, match="levels must decrease strictly"):
        DDIMSampler(schedule, levels=[500, 200, 300, 0])


def test_round_teacher_is_a_student_on_its_grid_or_the_base_model_on_a_finer_one():
    schedule = NoiseSchedule(500, "cosine")
    model, sampler, levels = distill.round_teacher("progressive_4step", schedule, base_steps=32)
    assert isinstance(sampler, DDIMSampler) and levels == manifest_entry("progressive_4step")["sampling"]["levels"]
    assert model.config.prediction == "v" and not any(p.requires_grad for p in model.parameters())
    model, sampler, levels = distill.round_teacher("unconditional", schedule, base_steps=8)
    assert isinstance(sampler, DPMSolverSampler) and len(levels) == 9 and levels[0] == 500 and levels[-1] == 0


def test_students_are_shipped_with_their_grids_and_commands():
    for name in STUDENTS:
        entry = manifest_entry(name)
        assert entry["config"]["prediction"] == "v", name
        levels = entry["sampling"]["levels"]
        assert levels[0] == 500 and levels[-1] == 0 and len(levels) - 1 == int(name.split("_")[1][0]), name
        run, rounds = distill.parse_arguments(shlex.split(entry["train_command"])[3:])
        recorded = dict(entry["training"])
        assert recorded.pop("rounds", rounds) == rounds
        assert asdict(run) == recorded, name


@pytest.fixture(scope="module")
def same_noise_runs():
    """64 noises through the teacher (DPM-Solver++ at 20 steps) and through every student."""
    schedule = NoiseSchedule(500, "cosine")
    noise = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    runs = {"teacher": generate(load_model("unconditional"), DPMSolverSampler(schedule), noise, 20, progress=False).images}
    for name in STUDENTS:
        runs[name] = generate(load_model(name), distill.student_sampler(manifest_entry(name), schedule), noise, progress=False).images
    return runs


@pytest.mark.parametrize("name", STUDENTS)
def test_students_learned_the_teachers_map(same_noise_runs, name):
    """From the same noise a student lands near the teacher's sprite: far nearer than the teacher's sprites for other noises."""
    teacher, student = same_noise_runs["teacher"], same_noise_runs[name]
    same = (student - teacher).pow(2).mean(dim=(1, 2, 3)).sqrt()
    other = (student - teacher.roll(1, dims=0)).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert same.median() < 0.6 * other.median(), f"{name}: {same.median():.3f} vs {other.median():.3f}"


def test_students_generate_rather_than_recall(same_noise_runs):
    from shared.data import load_sprites

    train = load_sprites("train").images
    for name in STUDENTS:
        distance = nearest_training_distance(same_noise_runs[name], train)
        assert (distance < 0.015).float().mean() < 0.05, name


def test_ddpm500_reference_samples_ship_for_lab_6():
    import numpy as np

    from shared.data import DATA_DIR

    with np.load(DATA_DIR / "ddpm500_samples.npz") as archive:
        images, seed = archive["images"], int(archive["noise_seed"])
        assert images.shape == (1000, 16, 16, 3) and images.dtype == np.uint8
        assert "benchmarks/distillation.py" in str(archive["command"])
    assert seed == 2020
    # Sprites, not noise: mostly white background like the real ones.
    assert (images > 230).all(axis=-1).mean() > 0.3
