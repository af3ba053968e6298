"""The re-training command: every shipped entry's recorded command parses, and a tiny run ships loadable weights."""

import shlex
from dataclasses import asdict

import pytest
import torch

import shared.weights as weights
from tools import reflow, train
from shared.weights import available_weights, load_model, manifest_entry


@pytest.fixture
def private_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights, "MANIFEST_PATH", tmp_path / "manifest.json")
    return tmp_path


def test_recorded_commands_reproduce_the_recorded_settings():
    for name in available_weights():
        entry = manifest_entry(name)
        argv = shlex.split(entry["train_command"])
        if argv[:3] == ["python", "-m", "tools.distill"]:
            continue  # distilled students: tests/test_distill.py checks their commands
        if argv[:3] == ["python", "-m", "tools.reflow"]:
            assert asdict(reflow.parse_arguments(argv[3:])) == entry["training"], name
            continue
        assert argv[:3] == ["python", "-m", "tools.train"]
        what = argv[3]
        parsed = train.parse_arguments(argv[3:])
        expected = {k: v for k, v in entry["training"].items() if k != "model"}
        assert {k: parsed[1][k] for k in expected} == expected, name
        assert what == entry["kind"]


@pytest.mark.parametrize(
    "argv, message",
    [(["denoiser", "--steps", "-5"], "--steps must be positive, got -5"),
     (["denoiser", "--batch-size", "0"], "--batch-size must be positive"),
     (["classifier", "--lr", "0"], "--lr must be positive"),
     (["denoiser", "--p-uncond", "2"], "in [0, 1]; got 2.0"),
     (["denoiser", "--ema-decay", "1"], "--ema-decay must be in [0, 1)"),
     (["denoiser", "--schedule", "cos"], "--schedule must be one of ('cosine', 'linear', 'flow')"),
     (["denoiser", "--schedule", "flow", "--prediction", "v"], "always predicts the velocity"),
     (["denoiser", "--name", "../unconditional"], "--name must be letters, digits and underscores")],
)
def test_bad_settings_stop_before_training(argv, message, capsys):
    with pytest.raises(SystemExit):
        train.parse_arguments(argv)
    assert message in capsys.readouterr().err


def test_tiny_denoiser_run_ships_snapshots_and_final_weights(private_weights):
    train.main(["denoiser", "--name", "tiny", "--steps", "3", "--batch-size", "4", "--snapshots", "0,2"])
    assert set(available_weights()) == {"tiny", "tiny_step0000", "tiny_step0002"}
    entry = manifest_entry("tiny")
    assert entry["train_command"] == "python -m tools.train denoiser --name tiny --steps 3 --batch-size 4 --snapshots 0,2"
    assert entry["steps_trained"] == 3 and entry["final_loss"] > 0
    model = load_model("tiny")
    assert model(torch.zeros(1, 3, 16, 16), torch.tensor([5])).shape == (1, 3, 16, 16)


def test_tiny_classifier_run(private_weights):
    train.main(["classifier", "--name", "tiny_classifier", "--steps", "2", "--batch-size", "4"])
    assert 0 <= manifest_entry("tiny_classifier")["validation_accuracy"] <= 1
    assert load_model("tiny_classifier")(torch.zeros(2, 3, 16, 16)).shape == (2, 9)


def test_tiny_flow_run_ships_a_flow_model_with_its_path(private_weights):
    train.main(["denoiser", "--name", "tiny_flow", "--schedule", "flow", "--steps", "2", "--batch-size", "4"])
    entry = manifest_entry("tiny_flow")
    assert entry["config"]["schedule"] == "flow" and entry["config"]["prediction"] == "velocity"
    model = load_model("tiny_flow")
    assert model.schedule.kind == "flow"
    assert model(torch.zeros(2, 3, 16, 16), torch.tensor([0.0, 0.7])).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="floating-point tensor of shape"):
        model(torch.zeros(1, 3, 16, 16), torch.tensor([5]))  # integer timesteps are a diffusion model's


def test_flow_batches_draw_times_in_the_unit_interval():
    images = torch.zeros(10, 3, 16, 16)
    index, t, noise = train.draw_denoising_batch(images, 64, None, torch.Generator().manual_seed(0))
    assert t.is_floating_point() and 0 <= float(t.min()) and float(t.max()) <= 1 and noise.shape == (64, 3, 16, 16)
