"""Device choice: the CPU always works, bad names are explained, and a GPU computes in full float32."""

import pytest
import torch

from shared.device import disable_tf32, pick_device


def test_cpu_can_always_be_asked_for():
    assert pick_device("cpu") == torch.device("cpu")


def test_unknown_device_name_says_what_is_expected():
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'mps'"):
        pick_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_missing_cuda_is_explained():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def test_disable_tf32_turns_off_reduced_precision():
    # TF32 convolutions give batch-size-dependent results that fail the labs' 1e-4 checks on a GPU
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        disable_tf32()
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
