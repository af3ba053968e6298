"""Loading the shipped weights safely.

Every file in weights/ is safetensors (no pickle: loading runs no code), listed in weights/manifest.json
with its sha256, size, the config that rebuilds the network (noise schedule included) and the command
that re-trains it. Loading checks the file before trusting it and says in one sentence what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from .data import REPO_ROOT, sha256_of
from .device import pick_device
from .model import ClassifierConfig, Denoiser, DenoiserConfig, SpriteClassifier, StepwiseDenoiser, StepwiseDenoiserConfig

WEIGHTS_DIR = REPO_ROOT / "weights"
MANIFEST_PATH = WEIGHTS_DIR / "manifest.json"
MODEL_KINDS = {
    "denoiser": (Denoiser, DenoiserConfig),
    "stepwise_denoiser": (StepwiseDenoiser, StepwiseDenoiserConfig),  # a distilled student (Lab 6)
    "classifier": (SpriteClassifier, ClassifierConfig),
}
LFS_POINTER_PREFIX = b"version https://git-lfs"


class WeightsError(RuntimeError):
    """A weight file is missing, damaged, or not what the manifest says."""


def read_manifest() -> dict:
    if not MANIFEST_PATH.exists():
        raise WeightsError(f"{MANIFEST_PATH} is missing: it ships with the repository; check out the full repository")
    return json.loads(MANIFEST_PATH.read_text())


def available_weights() -> list[str]:
    return sorted(read_manifest())


def manifest_entry(name: str) -> dict:
    manifest = read_manifest()
    if name not in manifest:
        raise WeightsError(f"no weights named {name!r}; available: {', '.join(sorted(manifest))}")
    return manifest[name]


def check_weight_file(name: str) -> Path:
    """Check that the file for `name` is present, complete and unmodified; return its path."""
    entry = manifest_entry(name)
    path = WEIGHTS_DIR / entry["file"]
    retrain = f"re-train it with: {entry['train_command']}"
    if not path.exists():
        raise WeightsError(f"weight file {path} for {name!r} is missing; restore it with git checkout, or {retrain}")
    with open(path, "rb") as file:
        head = file.read(len(LFS_POINTER_PREFIX))
    if head == LFS_POINTER_PREFIX:
        raise WeightsError(f"{path} is a Git LFS pointer, not the weights: run `git lfs pull`, or {retrain}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise WeightsError(f"{path} has {size} bytes but should have {entry['bytes']}: it is truncated or damaged; {retrain}")
    if sha256_of(path) != entry["sha256"]:
        raise WeightsError(f"{path} does not match its sha256 in {MANIFEST_PATH.name}: it was modified or damaged; {retrain}")
    return path


def load_model(name: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The shipped network `name`, checked against the manifest, in eval mode on `device`."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'mps' or a torch.device, got {device!r}") from None
    pick_device(device.type)  # a clear error if this machine has no such device
    path = check_weight_file(name)
    entry = manifest_entry(name)
    if entry["kind"] not in MODEL_KINDS:
        raise WeightsError(f"unknown model kind {entry['kind']!r} in the manifest; expected one of {list(MODEL_KINDS)}")
    model_class, config_class = MODEL_KINDS[entry["kind"]]
    model = model_class(config_class(**entry["config"]))
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except Exception as error:  # a checksum-valid file should never land here; say which file if it does
        raise WeightsError(f"{path} does not fit the {entry['kind']} config in the manifest: {error}") from None
    return model.to(device).eval()
