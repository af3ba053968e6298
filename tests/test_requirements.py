"""The course's packages are pinned, and torch and torchvision are a matched pair that imports and runs on the CPU."""

import re
from pathlib import Path

import torch

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.split("#")[0].strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def release(version: str) -> tuple[int, int]:
    """'2.14.1+cu130' -> (2, 14): the local label and the patch level don't name the release."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def test_requirements_pin_every_package_the_course_uses():
    course = {"torch", "torchvision", "numpy", "matplotlib", "pillow", "tqdm", "safetensors", "ipywidgets", "jupyter", "jupyterlab", "nbgrader"}
    unpinned = course - pinned_versions().keys()
    assert not unpinned, f"unpinned: {sorted(unpinned)}"


def test_requirements_pin_torch_and_torchvision_from_one_release():
    pins = pinned_versions()
    assert {"torch", "torchvision"} <= pins.keys(), "requirements.txt must pin both torch and torchvision"
    torch_release, vision_release = release(pins["torch"]), release(pins["torchvision"])
    # torchvision 0.N+15 is built for torch 2.N
    assert vision_release == (0, torch_release[1] + 15), f"torch {pins['torch']} needs torchvision 0.{torch_release[1] + 15}"


def test_installed_torch_and_torchvision_are_the_pinned_ones():
    import torchvision

    pins = pinned_versions()
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]


def test_torchvision_compiled_operators_run_on_the_cpu():
    # A torchvision built for another torch fails here, at its first compiled operator.
    from torchvision.ops import nms
    from torchvision.utils import make_grid

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]])
    kept = nms(boxes, torch.tensor([0.9, 0.5, 0.8]), iou_threshold=0.5)
    assert kept.tolist() == [0, 2]
    assert make_grid(torch.zeros(4, 3, 16, 16), nrow=2, padding=1).shape == (3, 35, 35)
