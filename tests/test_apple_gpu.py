"""The shared module on an Apple GPU, emulated (tests/emulated_mps.py): a Mac's `pick_device()` picks MPS.

MPS has no float64, so code that makes float64 on the GPU runs on the CPU and on CUDA and fails
only on a Mac; and any GPU refuses a CPU tensor in its ops, which CI (no GPU) cannot see either.
Each test runs a student-facing path with everything on the emulated device and checks that it
gives the CPU's results exactly.
"""

import numpy as np
import pytest
import torch
from emulated_mps import emulated_mps

from shared.data import context_vector, to_uint8
from shared.device import pick_device
from shared.guidance import ClassifierFreeGuidance
from shared.metrics import SpriteMetrics, nearest_training_distance
from shared.plotting import animation_gif, grid_image
from tools.sample import main
from shared.samplers import DDIMSampler, generate, make_sampler, timestep_grid
from shared.schedule import NoiseSchedule
from shared.weights import load_model


def test_the_emulation_enforces_what_mps_refuses():
    """Otherwise every test below would pass whatever the code did."""
    mps_before = torch.backends.mps.is_available()
    with emulated_mps():
        x = torch.ones(3).to("mps")
        assert x.device.type == "mps" and (x * 2).device.type == "mps"
        assert torch.zeros(2, device=x.device).device.type == "mps"
        assert x.cpu().device.type == "cpu" and x.cpu().tolist() == [1.0, 1.0, 1.0]
        with pytest.raises(TypeError, match="float64"):
            x.double()
        with pytest.raises(TypeError, match="float64"):
            torch.zeros(2, dtype=torch.float64, device="mps")
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.ones(3)
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        with pytest.raises(RuntimeError, match="generator"):
            torch.randn(3, generator=torch.Generator(), device="mps")
        assert (x + torch.tensor(1.0)).device.type == "mps"  # a 0-d CPU tensor is a scalar: allowed
        assert x[torch.tensor([0, 2])].device.type == "mps"  # and so is a CPU index
        with pytest.raises(RuntimeError, match="indices"):  # but not a GPU index into a CPU tensor
            torch.ones(3)[x > 0]
        with pytest.raises(NotImplementedError, match="autograd"):  # rather than abort the test run
            with torch.enable_grad():
                pass
        if not torch.cuda.is_available():
            assert pick_device() == torch.device("mps")
    assert torch.is_grad_enabled() and torch.backends.mps.is_available() == mps_before  # all undone


def test_timestep_grids_from_a_schedule_on_the_gpu():
    """The log-SNR grids are computed in float64: on the host, not on the GPU (a bug fixed here)."""
    want = {spacing: timestep_grid(NoiseSchedule(), 10, spacing) for spacing in ("time", "logsnr", "banded")}
    with emulated_mps():
        schedule = NoiseSchedule().to("mps")
        assert {spacing: timestep_grid(schedule, 10, spacing) for spacing in want} == want


@pytest.mark.parametrize("sampler, n_steps", [("ddpm", 12), ("ddim", 5), ("ddim eta", 5), ("dpmsolver", 5), ("unipc", 5)])
def test_every_sampler_gives_the_cpu_sprites(sampler, n_steps):
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    contexts = torch.stack([context_vector("Flags"), context_vector({"Food & Drink": 1, "Smileys & Emotion": 1})])

    def run(device):
        schedule = NoiseSchedule().to(device)
        chosen = DDIMSampler(schedule, eta=0.5) if sampler == "ddim eta" else make_sampler(sampler, schedule)
        model = load_model("context", device)
        return generate(model, chosen, noise, n_steps, contexts, torch.Generator().manual_seed(1), n_frames=3, progress=False)

    want = run("cpu")
    with emulated_mps():
        got = run("mps")
        assert got.images.device.type == "cpu" and torch.equal(got.images, want.images)
        assert all(torch.equal(a, b) for a, b in zip(got.frames + got.x0_frames, want.frames + want.x0_frames))


def test_classifier_free_guidance_gives_the_cpu_prediction():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t, contexts = torch.tensor([400, 30]), torch.stack([context_vector("Flags"), context_vector("Activities")])
    want = ClassifierFreeGuidance(load_model("context"), 3.0)(x, t, contexts)
    with emulated_mps():
        guided = ClassifierFreeGuidance(load_model("context", "mps"), 3.0)
        got = guided(x.to("mps"), t.to("mps"), contexts.to("mps"))
        assert got.device.type == "mps" and torch.equal(got.cpu(), want)


def test_metrics_take_sprites_on_the_gpu():
    images = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    labels = torch.arange(40) % 9
    cpu_metrics = SpriteMetrics(load_model("classifier"))
    want = (cpu_metrics.frechet(images), cpu_metrics.class_accuracy(images, labels), nearest_training_distance(images, cpu_metrics.train.images).tolist())
    with emulated_mps():
        metrics = SpriteMetrics(load_model("classifier", "mps"))
        on_gpu, labels_on_gpu = images.to("mps"), labels.to("mps")
        got = (metrics.frechet(on_gpu), metrics.class_accuracy(on_gpu, labels_on_gpu), nearest_training_distance(on_gpu, metrics.train.images).tolist())
        assert got == want
        train_on_gpu = metrics.train.images[:500].to("mps")
        assert torch.equal(nearest_training_distance(on_gpu, train_on_gpu), nearest_training_distance(images, metrics.train.images[:500]))


def test_pictures_of_sprites_on_the_gpu():
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    want = grid_image(images, nrow=2), to_uint8(images), animation_gif([images, images], nrow=2)
    with emulated_mps():
        on_gpu = images.to("mps")
        got = grid_image(on_gpu, nrow=2), to_uint8(on_gpu), animation_gif([on_gpu, on_gpu], nrow=2)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]


@pytest.mark.parametrize("options", [["--sampler", "dpmsolver", "--steps", "6"],
                                     ["--weights", "context", "--label", "flags", "--guidance", "2", "--sampler", "ddim", "--steps", "5"],
                                     ["--weights", "knowledge_1step"]])
def test_the_sampling_command_with_device_mps(tmp_path, options):
    common = ["--quiet", "--n", "3", "--seed", "5", *options]
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "cpu.npz")]) == 0
    with emulated_mps():
        assert main([*common, "--device", "mps", "--out", str(tmp_path / "mps.npz")]) == 0
    with np.load(tmp_path / "cpu.npz") as want, np.load(tmp_path / "mps.npz") as got:
        assert np.array_equal(got["images"], want["images"]) and np.array_equal(got["labels"], want["labels"])
