"""The benchmarks' command-line checks: which denoisers --models accepts, and how they are named."""

import pytest

from benchmarks.foundation import model_names, trained_with_context


@pytest.mark.parametrize("arguments", [["unconditional", "context"], ["unconditional,context"], ["unconditional,", "context"]])
def test_model_names_take_spaces_or_commas(arguments):
    assert model_names(arguments) == ["unconditional", "context"]


def test_trained_with_context_reads_the_manifest():
    assert trained_with_context("context") is True
    assert trained_with_context("unconditional") is False


@pytest.mark.parametrize("name, says", [("no_such_model", "no_such_model"), ("progressive_4step", "distillation.py")])
def test_models_that_no_benchmark_samples_stop_with_a_clear_message(name, says):
    with pytest.raises(SystemExit, match=says):
        trained_with_context(name)


def test_grid_tuning_keeps_a_valid_grid_and_never_raises_the_error_it_fits():
    import torch

    from benchmarks.fast_sampling import exact_ode
    from benchmarks.tune_grid import STEPS, distances, rms, tune
    from shared.samplers import DPMSolverSampler, check_levels, timestep_grid
    from shared.schedule import NoiseSchedule
    from shared.weights import load_model

    schedule, model = NoiseSchedule(500, "cosine"), load_model("unconditional")
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    exact, _, _ = exact_ode(model, schedule, noise, None)
    tuned = tune(model, schedule, noise, exact, sweeps=1)
    assert check_levels(tuned, 500) == tuned and len(tuned) == STEPS + 1
    banded = timestep_grid(schedule, STEPS, "banded")
    before = rms(distances(model, schedule, noise, exact, DPMSolverSampler, banded))
    assert rms(distances(model, schedule, noise, exact, DPMSolverSampler, tuned)) <= before


def test_grid_tuning_names_a_bad_model_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "tune_grid.py"
    result = subprocess.run([sys.executable, str(script), "--model", "progressive_4step"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--model: 'progressive_4step' is not a denoiser trained by tools.train" in result.stderr


def test_multiply_adds_count_every_convolution_and_linear_layer():
    import torch
    from torch import nn

    from benchmarks.foundation import Baseline, multiply_adds

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)  # 8 x 8 outputs x 8 channels, each 3 x 9 products
            self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)  # 8 x 8 x 8 inputs, each meets 4 x 4 weights
            self.head = nn.Linear(16, 5)  # 4 x 16 rows of 16 -> 5

        def forward(self, x, t):
            return self.head(self.up(self.conv(x)))

    x, t = torch.zeros(2, 3, 16, 16), torch.tensor([1, 2])
    assert multiply_adds(Tiny(), x, t) == 8 * 8 * 8 * 3 * 9 + 8 * 8 * 8 * 4 * 4 + 4 * 16 * 5 * 16
    # The baseline's size as the DeepLearning.AI course builds it: about 1.48 M parameters, ~150 M multiply-adds.
    assert 140e6 < multiply_adds(Baseline().eval(), torch.zeros(1, 3, 16, 16), torch.tensor([250])) < 160e6


def test_ddpm500_context_samples_ship_for_lab_4():
    """The context model's DDPM-500 sprites that Lab 4 compares with: the benchmark's first draw, groups included."""
    import numpy as np
    import torch

    from benchmarks.fast_sampling import CONTEXT_REFERENCE_PATH, draw_contexts
    from shared.data import DATA_DIR, GROUPS, from_uint8
    from shared.metrics import SpriteMetrics
    from shared.weights import load_model

    with np.load(CONTEXT_REFERENCE_PATH) as archive, np.load(DATA_DIR / "ddpm500_samples.npz") as unconditional:
        images, labels = archive["images"], archive["labels"]
        assert images.shape == (1000, 16, 16, 3) and images.dtype == np.uint8
        assert labels.shape == (1000,) and labels.min() >= 0 and labels.max() < len(GROUPS)
        assert "benchmarks/fast_sampling.py" in str(archive["command"])
        # Lab 4 runs both models from the same noises.
        assert int(archive["noise_seed"]) == int(unconditional["noise_seed"])
        assert len(images) == len(unconditional["images"])
        context_seed = int(archive["context_seed"])
    metrics = SpriteMetrics(load_model("classifier"))
    assert torch.equal(torch.from_numpy(labels), draw_contexts(metrics, len(labels), context_seed).argmax(dim=1))
    # Sprites of the groups they were asked for, not noise or the unconditional model's.
    assert metrics.class_accuracy(from_uint8(images), torch.from_numpy(labels))["overall"] > 0.7


def test_sample_speed_benchmark_reports_every_column_on_a_tiny_run():
    """benchmarks/sample_speed.py end to end on 32 sprites: the command, its one-batch baseline and the network alone
    each run, and each row reports them (no time is asserted: only that the parts add up)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "benchmarks/sample_speed.py", "--n", "32", "--repeats", "1"],
                            cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    row = next(line.split() for line in result.stdout.splitlines() if line.split()[:1] == ["32"])
    one_batch, chunked, network, network_gflops, matmul_gflops = (float(row[i]) for i in (1, 3, 6, 7, 8))
    assert min(one_batch, chunked, network, network_gflops, matmul_gflops) > 0
    in_network = float(row[9].rstrip("%"))
    assert 0 < in_network < 101  # a part of the sampling time (the rate it is taken from is printed rounded)
    assert "(87 MFLOP each)" in result.stdout  # the one-step student's one call, counted by torch
    header = result.stdout.splitlines()[0]
    assert f"{os.cpu_count()} cores" in header and "unknown processor" not in header  # which machine gave the figures
