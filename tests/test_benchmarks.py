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
    from shared.samplers import DPMSolverSampler, check_levels, timestep_levels
    from shared.schedule import NoiseSchedule
    from shared.weights import load_model

    schedule, model = NoiseSchedule(500, "cosine"), load_model("unconditional")
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    exact, _, _ = exact_ode(model, schedule, noise, None)
    tuned = tune(model, schedule, noise, exact, sweeps=1)
    assert check_levels(tuned, 500) == tuned and len(tuned) == STEPS + 1
    banded = timestep_levels(schedule, STEPS, "banded")
    before = rms(distances(model, schedule, noise, exact, DPMSolverSampler, banded))
    assert rms(distances(model, schedule, noise, exact, DPMSolverSampler, tuned)) <= before


def test_grid_tuning_names_a_bad_model_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "tune_grid.py"
    result = subprocess.run([sys.executable, str(script), "--model", "progressive_4step"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--model: 'progressive_4step' is not a denoiser trained by shared.train" in result.stderr
