"""Shipped weights: every manifest entry loads and matches its checksum; broken files give clear errors."""

import json
import shutil

import pytest
import torch

import shared.weights as weights
from shared.model import Denoiser, SpriteClassifier, StepwiseDenoiser
from shared.weights import WeightsError, available_weights, check_weight_file, load_model, manifest_entry, read_manifest


def test_manifest_names_the_course_weights():
    names = available_weights()
    for name in ("unconditional", "context", "classifier"):
        assert name in names


@pytest.mark.parametrize("name", ["unconditional", "context", "classifier"])
def test_entry_records_config_checksum_and_retraining(name):
    entry = manifest_entry(name)
    for key in ("file", "sha256", "bytes", "config", "train_command", "training_time_s", "final_loss"):
        assert key in entry, f"{name} lacks {key}"
    assert entry["train_command"].startswith("python -m tools.train ")
    assert entry["file"].endswith(".safetensors")


def test_every_shipped_file_loads():
    for name in available_weights():
        model = load_model(name)
        expected = {"denoiser": Denoiser, "stepwise_denoiser": StepwiseDenoiser, "classifier": SpriteClassifier}[manifest_entry(name)["kind"]]
        assert type(model) is expected and not model.training, name


def test_context_model_was_trained_with_context_dropout():
    p_uncond = manifest_entry("context")["training"]["p_uncond"]
    assert 0.1 <= p_uncond <= 0.2, "Ho & Salimans 2022 found 0.1-0.2 best for classifier-free guidance"
    assert manifest_entry("unconditional")["training"]["p_uncond"] == 1.0


def test_classifier_recognises_held_out_sprites():
    assert manifest_entry("classifier")["validation_accuracy"] > 0.6


@pytest.fixture
def weights_copy(tmp_path, monkeypatch):
    """A private copy of weights/ to break things in."""
    folder = tmp_path / "weights"
    shutil.copytree(weights.WEIGHTS_DIR, folder)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(weights, "MANIFEST_PATH", folder / "manifest.json")
    return folder


def test_missing_file(weights_copy):
    (weights_copy / "context.safetensors").unlink()
    with pytest.raises(WeightsError, match="is missing.*re-train it with: python -m tools.train"):
        load_model("context")


def test_truncated_file(weights_copy):
    path = weights_copy / "context.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated"):
        load_model("context")


def test_git_lfs_pointer(weights_copy):
    (weights_copy / "context.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 6000000\n"
    )
    with pytest.raises(WeightsError, match="Git LFS pointer.*git lfs pull"):
        load_model("context")


def test_modified_file(weights_copy):
    path = weights_copy / "context.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        check_weight_file("context")


def test_unknown_name_lists_the_choices():
    with pytest.raises(WeightsError, match="no weights named 'gpt'; available: .*context"):
        load_model("gpt")


@pytest.mark.parametrize("device, message", [("gpu", "device must be 'cpu', 'cuda', 'mps' or a torch.device, got 'gpu'"),
                                             ("cuda", "no CUDA GPU"), ("mps", "no Apple GPU")])
def test_bad_or_absent_device_says_so(device, message):
    if device == "cuda" and torch.cuda.is_available() or device == "mps" and torch.backends.mps.is_available():
        pytest.skip(f"this machine has {device}")
    with pytest.raises(ValueError, match=message):
        load_model("context", device)


def test_files_are_safetensors_not_pickles():
    for name in available_weights():
        head = (weights.WEIGHTS_DIR / read_manifest()[name]["file"]).read_bytes()[:16]
        assert not head.startswith(b"PK") and not head.startswith(b"\x80"), "zip/pickle checkpoints can run code"
