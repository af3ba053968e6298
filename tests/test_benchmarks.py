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
