"""Grids, bounded animations, and the sampling loop's determinism."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from shared.model import Denoiser
from shared.plotting import MAX_ANIMATION_FRAMES, MAX_ANIMATION_PIXELS, animation_gif, grid_image, points_gif, show_grid
from shared.samplers import DDIMSampler, DDPMSampler, generate
from shared.schedule import NoiseSchedule


def test_grid_image_layout():
    images = torch.linspace(-1, 1, 10 * 3 * 16 * 16).view(10, 3, 16, 16)
    grid = grid_image(images, nrow=4, padding=1)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 17 + 1, 4 * 17 + 1, 3)
    assert grid_image(images, nrow=4, upscale=3).shape == (3 * (3 * 17 + 1), 3 * (4 * 17 + 1), 3)
    with pytest.raises(ValueError, match="uint8"):
        grid_image(np.zeros((2, 16, 16, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="nrow .* must be a positive integer, got 0"):
        grid_image(images, nrow=0)


def test_show_grid_needs_one_label_per_row():
    import matplotlib

    matplotlib.use("Agg")
    images = torch.zeros(10, 3, 16, 16)
    show_grid(images, nrow=5, row_labels=["first", "second"])
    with pytest.raises(ValueError, match="one label per row: 2 rows, got 1 labels"):
        show_grid(images, nrow=5, row_labels=["first"])


def test_animation_is_bounded_in_frames_and_size():
    frames = [torch.rand(64, 3, 16, 16) * 2 - 1 for _ in range(200)]
    gif = animation_gif(frames, nrow=8)
    picture = Image.open(io.BytesIO(gif))
    assert picture.n_frames <= MAX_ANIMATION_FRAMES
    assert max(picture.size) <= MAX_ANIMATION_PIXELS
    assert len(gif) < 1_500_000, "even 40 frames of pure noise stay small"
    with pytest.raises(ValueError, match="one caption per frame: 200 frames, got 1 captions"):
        animation_gif(frames, captions=["only one"])
    with pytest.raises(ValueError, match=r"same number of sprites, got \[64, 8\]"):
        animation_gif([frames[0], frames[1][:8]])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Denoiser().eval(), NoiseSchedule(500)


def test_generate_is_repeatable_and_keeps_frames(tiny):
    model, schedule = tiny
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = generate(model, "ddpm", noise, n_steps=10, generator=torch.Generator().manual_seed(1), n_frames=4, progress=False)
    b = generate(model, "ddpm", noise, n_steps=10, generator=torch.Generator().manual_seed(1), progress=False)
    c = generate(model, "ddpm", noise, n_steps=10, generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert len(a.frames) == len(a.x0_frames) == len(a.frame_timesteps) == 5
    assert a.frame_timesteps[0] == 500 and a.frame_timesteps[-1] == 0
    assert torch.equal(a.frames[0], noise)


def test_generate_rejects_bad_contexts(tiny):
    model, schedule = tiny
    with pytest.raises(ValueError, match="sum to 1"):
        generate(model, "ddpm", torch.randn(2, 3, 16, 16), n_steps=2, contexts=torch.ones(2, 9), progress=False)


def test_generate_names_its_arguments_when_they_come_in_the_wrong_order(tiny):
    model, schedule = tiny
    noise = torch.randn(2, 3, 16, 16)
    with pytest.raises(TypeError, match="sampler must be a name such as 'ddim' or a Sampler .*got NoiseSchedule"):
        generate(model, schedule, noise, progress=False)
    with pytest.raises(TypeError, match="sampler must be a name such as 'ddim' or a Sampler .*got int"):
        generate(model, 10, noise, progress=False)
    with pytest.raises(ValueError, match="noise must be a batch of images"):
        generate(model, "ddim", DDIMSampler(schedule), progress=False)
    with pytest.raises(ValueError, match="does not fit a model trained on the 'cosine' schedule with T = 500"):
        generate(model, DDIMSampler(NoiseSchedule(1000)), noise, 5, progress=False)  # a schedule the model was not trained with
    with pytest.raises(ValueError, match="does not fit this model's 'cosine' schedule"):
        generate(model, "heun", noise, 5, progress=False)


def test_ddpm_step_needs_noise_except_at_the_end(tiny):
    _, schedule = tiny
    sampler = DDPMSampler(schedule)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="fresh noise"):
        sampler.step(x, 10, 9, x, None)
    with pytest.raises(ValueError, match="t_prev < t"):
        sampler.step(x, 10, 10, x, x)
    with pytest.raises(ValueError, match=r"output must have the shape of x_t \(1, 3, 16, 16\), got tensor of shape \(2, 3, 16, 16\)"):
        sampler.step(torch.randn(2, 3, 16, 16), 10, 9, x, x)


def test_points_animation_is_bounded_and_rejects_bad_frames():
    frames = [torch.randn(300, 2) for _ in range(60)]
    gif = Image.open(io.BytesIO(points_gif(frames, captions=[str(i) for i in range(60)])))
    assert gif.n_frames == MAX_ANIMATION_FRAMES and max(gif.size) <= MAX_ANIMATION_PIXELS
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        points_gif([torch.randn(10, 3)])
