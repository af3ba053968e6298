"""Flow matching (Lab 7): the straight path, Euler and Heun on known fields, straightness, and the reflow command."""

import pytest
import torch

import shared.weights as weights
from shared.flow import StraightPath, straightness
from shared.model import Denoiser, DenoiserConfig
from shared.samplers import DDIMSampler, EulerSampler, HeunSampler, generate, make_sampler
from shared.weights import load_model, manifest_entry
from tools import reflow, train


class Field(torch.nn.Module):
    """A velocity field v(x, t) given as a function; a flow model's config and path, so `generate` runs it."""

    def __init__(self, velocity):
        super().__init__()
        self.velocity = velocity
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # generate finds the device from a parameter
        self.config = DenoiserConfig(schedule="flow", prediction="velocity")
        self.schedule = StraightPath()

    def forward(self, x, t, context=None):
        assert t.is_floating_point() and t.shape == (x.shape[0],)
        return self.velocity(x, t)


def test_the_path_joins_sprite_and_noise_and_its_velocity_is_their_difference():
    path, g = StraightPath(), torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    x_t = path.add_noise(x0, t, noise)
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[3], noise[3])
    assert torch.allclose(x_t[1], 0.75 * x0[1] + 0.25 * noise[1])
    target = path.training_target("velocity", x0, noise, t)
    assert torch.equal(target, noise - x0)
    eps_hat, x0_hat = path.eps_and_x0(target, "velocity", x_t, t)  # the exact velocity recovers both ends
    assert torch.allclose(x0_hat, x0, atol=1e-6) and torch.allclose(eps_hat, noise, atol=1e-6)
    with pytest.raises(ValueError, match="floating-point tensor"):
        path.add_noise(x0, torch.tensor([0, 1, 2, 3]), noise)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        path.add_noise(x0, torch.tensor([0.0, 0.5, 1.0, 1.5]), noise)
    with pytest.raises(ValueError, match="predicts the velocity"):
        path.training_target("eps", x0, noise, t)


def test_euler_is_exact_on_a_constant_field_and_heun_on_a_linear_one():
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    constant = Field(lambda x, t: torch.ones_like(x))
    run = generate(constant, "euler", noise, 7, progress=False)
    assert torch.allclose(run.images, noise - 1, atol=1e-6) and run.network_calls == 7
    # v = 2t (per pixel): from t = 1 to 1/3 the trapezoid is exact (x_1 - 8/9), Euler's is not;
    # the last step, to 0, is Euler's in both (v(1/3) / 3 = 2/9)
    linear_in_t = Field(lambda x, t: 2 * t.view(-1, 1, 1, 1).expand_as(x))
    heun = generate(linear_in_t, HeunSampler(StraightPath(), shift=1), noise, 3, progress=False)  # the even grid
    euler = generate(linear_in_t, EulerSampler(StraightPath(), shift=1), noise, 3, progress=False)
    assert torch.allclose(heun.images, noise - 8 / 9 - 2 / 9, atol=1e-6) and heun.network_calls == 5
    assert (euler.images - heun.images).abs().max() > 0.1


def test_the_flow_grid_is_even_at_shift_1_and_leans_towards_the_noise_by_default():
    path = StraightPath()
    assert EulerSampler(path, shift=1).timesteps(4) == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
    grid = HeunSampler(path).timesteps(4)
    times = [t for t, _ in grid] + [grid[-1][1]]
    assert times[0] == 1 and times[-1] == 0 and all(a > b for a, b in zip(times, times[1:]))
    assert times[2] == pytest.approx(2 / 3)  # shift 2: half the steps above t = 2/3
    assert make_sampler("euler", path).timesteps(4) == grid
    for bad in (0, -1.0, "2"):
        with pytest.raises(ValueError, match="shift must be a number > 0"):
            EulerSampler(path, shift=bad)


def test_heun_is_second_order_on_a_curved_field():
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    field = Field(lambda x, t: x)  # dx/dt = x: x_0 = x_1 / e
    exact = noise / torch.e

    def error(sampler, n):
        return (generate(field, sampler, noise, n, progress=False).images - exact).abs().max().item()

    assert error("euler", 20) / error("euler", 40) == pytest.approx(2, rel=0.1)  # first order
    assert error("heun", 20) / error("heun", 40) == pytest.approx(4, rel=0.1)  # second order


def test_flow_samplers_and_diffusion_samplers_do_not_mix():
    flow = Denoiser(DenoiserConfig(schedule="flow", prediction="velocity")).eval()
    diffusion = Denoiser().eval()
    noise = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="does not fit this model's 'flow' schedule"):
        generate(flow, "ddim", noise, 2, progress=False)
    with pytest.raises(TypeError, match="integrates a flow model's ODE"):
        EulerSampler(diffusion.schedule)
    with pytest.raises(ValueError, match="does not fit"):
        generate(diffusion, HeunSampler(flow.schedule), noise, 2, progress=False)
    with pytest.raises(ValueError, match="does not fit"):
        generate(flow, DDIMSampler(diffusion.schedule), noise, 2, progress=False)
    with pytest.raises(ValueError, match="number of steps >= 1"):
        make_sampler("euler", flow.schedule).timesteps(0)
    with pytest.raises(ValueError, match="predicts the velocity"):
        DenoiserConfig(schedule="flow")  # a flow model's prediction must say so


def test_straightness_is_zero_for_a_straight_path_and_grows_with_bending():
    g = torch.Generator().manual_seed(3)
    steady = torch.randn(1, 4, 3, 16, 16, generator=g).expand(10, -1, -1, -1, -1)
    assert torch.allclose(straightness(steady), torch.zeros(4))
    turning = torch.stack([torch.full((2, 3, 16, 16), float(i % 2)) for i in range(10)])  # 0, 1, 0, 1, ...
    assert torch.allclose(straightness(turning), torch.full((2,), 0.25))
    assert (straightness(turning * 2) > straightness(turning)).all()
    with pytest.raises(ValueError, match=r"\(N, B, ...\)"):
        straightness(torch.zeros(3, 4))


@pytest.fixture
def private_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights, "MANIFEST_PATH", tmp_path / "manifest.json")
    return tmp_path


def test_tiny_reflow_run_ships_a_one_step_flow_model(private_weights, capsys):
    train.main(["denoiser", "--name", "tiny_flow", "--schedule", "flow", "--steps", "2", "--batch-size", "4"])
    reflow.main(["--teacher", "tiny_flow", "--name", "tiny_reflow", "--pairs", "8", "--pair-steps", "2",
                 "--steps", "2", "--batch-size", "4"])
    entry = manifest_entry("tiny_reflow")
    assert entry["train_command"].startswith("python -m tools.reflow --teacher tiny_flow")
    assert entry["default_sampling"] == {"sampler": "euler", "steps": 1} and entry["reflowed_from"] == "tiny_flow"
    model = load_model("tiny_reflow")
    assert model.schedule.kind == "flow"
    assert generate(model, "euler", torch.randn(2, 3, 16, 16), 1, progress=False).network_calls == 1


def test_reflow_init_starts_from_another_flow_models_weights(private_weights):
    train.main(["denoiser", "--name", "tiny_flow", "--schedule", "flow", "--steps", "2", "--batch-size", "4"])
    tiny = ["--pairs", "8", "--pair-steps", "2", "--steps", "2", "--batch-size", "4"]
    reflow.main(["--teacher", "tiny_flow", "--name", "tiny_reflow", "--lr", "0.01", "--warmup-steps", "0", *tiny])  # far from its teacher
    # a learning rate of almost zero leaves the starting weights: they must be tiny_reflow's, not the teacher's
    reflow.main(["--teacher", "tiny_flow", "--init", "tiny_reflow", "--name", "tiny_distilled", "--seed", "1", "--lr", "1e-12", *tiny])
    entry = manifest_entry("tiny_distilled")
    assert entry["initialised_from"] == "tiny_reflow" and entry["reflowed_from"] == "tiny_flow"
    assert "--init tiny_reflow" in entry["train_command"]
    started, distilled, teacher = (load_model(name).state_dict() for name in ("tiny_reflow", "tiny_distilled", "tiny_flow"))
    assert all(torch.allclose(distilled[key], started[key], atol=1e-6) for key in started)
    assert not all(torch.allclose(distilled[key], teacher[key], atol=1e-6) for key in teacher)
    assert "initialised_from" not in manifest_entry("tiny_reflow")


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "unconditional", "--steps", "1", "--pairs", "2"], "reflow straightens a flow model"),
    (["--endpoint-share", "1.5"], "--endpoint-share is a share of the batch"),
    (["--teacher", "nope"], "no weights named 'nope'"),
    (["--pairs", "0"], "--pairs and --pair-steps must be positive"),
    (["--init", "unconditional"], "must be a flow model of the teacher's architecture"),
    (["--init", "nope"], "--init: no weights named 'nope'"),
    (["--feature-weight", "-1"], "--feature-weight must be >= 0"),
])
def test_bad_reflow_settings_stop_before_training(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        reflow.parse_arguments(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_reflow_endpoint_share_puts_rows_at_t_one():
    t = reflow.draw_times(8, 0.25, torch.Generator().manual_seed(0))
    assert t[:2].tolist() == [1.0, 1.0] and bool((t[2:] < 1).all())


def test_feature_distance_is_zero_for_the_same_sprites_and_positive_for_others():
    torch.manual_seed(0)
    features = reflow.TeacherFeatures(Denoiser(DenoiserConfig(schedule="flow", prediction="velocity")).eval())
    sprites = torch.rand(4, 3, 16, 16) * 2 - 1
    assert float(reflow.feature_distance(features, sprites, sprites)) < 1e-10
    other = torch.rand(4, 3, 16, 16) * 2 - 1
    assert float(reflow.feature_distance(features, other, sprites)) > 0.01
    assert len(features(sprites)) == len(features.network.down_blocks) + 1  # one map per down block and the middle


def test_the_feature_loss_reaches_only_the_one_step_rows():
    torch.manual_seed(0)
    model = Denoiser(DenoiserConfig(schedule="flow", prediction="velocity"))
    features = reflow.TeacherFeatures(Denoiser(DenoiserConfig(schedule="flow", prediction="velocity")).eval().requires_grad_(False))
    noise, sprites = torch.randn(4, 3, 16, 16), torch.rand(4, 3, 16, 16) * 2 - 1
    inside = torch.tensor([0.2, 0.5, 0.7, 0.9])
    plain = reflow.reflow_loss(model, noise, sprites, inside)
    assert torch.equal(reflow.reflow_loss(model, noise, sprites, inside, features, 5.0), plain)  # no row at t = 1
    ends = torch.tensor([1.0, 1.0, 0.5, 0.7])
    assert float(reflow.reflow_loss(model, noise, sprites, ends, features, 5.0)) > float(reflow.reflow_loss(model, noise, sprites, ends))


def test_a_tiny_perceptual_reflow_run_records_its_feature_weight(private_weights):
    train.main(["denoiser", "--name", "tiny_flow", "--schedule", "flow", "--steps", "2", "--batch-size", "4"])
    reflow.main(["--teacher", "tiny_flow", "--name", "tiny_perceptual", "--pairs", "8", "--pair-steps", "2", "--steps", "2",
                 "--batch-size", "4", "--endpoint-share", "0.5", "--feature-weight", "1.0"])
    entry = manifest_entry("tiny_perceptual")
    assert entry["training"]["feature_weight"] == 1.0 and "--feature-weight 1.0" in entry["train_command"]
    assert torch.isfinite(next(iter(load_model("tiny_perceptual").state_dict().values()))).all()
