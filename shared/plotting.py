"""Pictures: sprite grids, and denoising animations small enough to keep in a notebook.

Animations are Pillow GIFs, not matplotlib's player (a PNG per frame): at most 40 frames of the
sprites' own pixels, at most 200 px, which the browser enlarges unblurred (`image-rendering: pixelated`).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from .data import to_uint8

MAX_ANIMATION_FRAMES = 40
MAX_ANIMATION_PIXELS = 200  # longest side of the GIF itself; the browser enlarges it


def grid_image(images, nrow: int = 8, padding: int = 1, upscale: int = 1) -> np.ndarray:
    """Tile N sprites into one uint8 image (rows of `nrow`), white gaps between them."""
    images = to_uint8(images)
    n, h, w, _ = images.shape
    if n == 0:
        raise ValueError("no images to draw")
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow (sprites per row) must be a positive integer, got {nrow!r}")
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    canvas = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        canvas[top : top + h, left : left + w] = image
    if upscale > 1:
        canvas = canvas.repeat(upscale, axis=0).repeat(upscale, axis=1)  # nearest: keep pixels crisp
    return canvas


def show_grid(images, nrow: int = 8, title: str | None = None, row_labels: list[str] | None = None, size: float = 0.45):
    """Draw a grid with matplotlib; `row_labels` names each row (for example one group per row)."""
    import matplotlib.pyplot as plt

    grid = grid_image(images, nrow)
    height, width = grid.shape[:2]
    cell = 17  # a 16-pixel sprite and the 1-pixel gap after it
    n_rows = (height - 1) // cell
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"row_labels needs one label per row: {n_rows} rows, got {len(row_labels)} labels")
    _, axis = plt.subplots(figsize=(max(2.0, size * width / cell), max(1.0, size * height / cell)))
    axis.imshow(grid, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([cell * i + 9 for i in range(n_rows)] if row_labels else [])
    if row_labels:
        axis.set_yticklabels(row_labels)
    if title:
        axis.set_title(title)
    for spine in axis.spines.values():
        spine.set_visible(False)
    plt.show()  # returns nothing, so a notebook does not draw the figure twice


def animation_gif(frames: list, nrow: int = 8, duration_ms: int = 80, captions: list[str] | None = None) -> bytes:
    """A looping GIF of a list of image batches (each a tensor or uint8 array), at most 40 frames, enlarged only up to 200 px."""
    if not frames:
        raise ValueError("no frames to animate")
    if captions is not None and len(captions) != len(frames):
        raise ValueError(f"captions needs one caption per frame: {len(frames)} frames, got {len(captions)} captions")
    if len(frames) > MAX_ANIMATION_FRAMES:  # evenly spaced, first and last kept
        keep = np.linspace(0, len(frames) - 1, MAX_ANIMATION_FRAMES).round().astype(int)
        frames = [frames[i] for i in keep]
        captions = [captions[i] for i in keep] if captions else None
    grids = [grid_image(frame, nrow) for frame in frames]
    if any(grid.shape != grids[0].shape for grid in grids):
        raise ValueError(f"every frame must hold the same number of sprites, got {[len(frame) for frame in frames]}")
    band = 12 if captions else 0  # a white strip above the sprites, so a caption hides none of them
    upscale = max(1, (MAX_ANIMATION_PIXELS - band) // max(grids[0].shape[:2]))
    pictures = [Image.fromarray(grid.repeat(upscale, 0).repeat(upscale, 1)) for grid in grids]
    if captions:
        from PIL import ImageDraw

        for i, (picture, caption) in enumerate(zip(pictures, captions)):
            framed = Image.new("RGB", (picture.width, picture.height + band), (255, 255, 255))
            framed.paste(picture, (0, band))
            ImageDraw.Draw(framed).text((2, 0), caption, fill=(0, 0, 0))
            pictures[i] = framed
    buffer = io.BytesIO()
    durations = [duration_ms] * (len(pictures) - 1) + [1500]  # linger on the result
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return buffer.getvalue()


def display_gif(data: bytes, width: int) -> None:
    import base64

    from IPython.display import HTML, display

    encoded = base64.b64encode(data).decode()
    display(HTML(f'<img src="data:image/gif;base64,{encoded}" style="width:{width}px; image-rendering:pixelated">'))


def show_animation(frames: list, nrow: int = 8, duration_ms: int = 80, captions: list[str] | None = None, width: int = 480):
    """Display the GIF of `animation_gif` in a notebook, `width` pixels wide on screen."""
    display_gif(animation_gif(frames, nrow, duration_ms, captions), width)


def points_gif(frames: list, limit: float = 2.5, size: int = 186, duration_ms: int = 80, captions: list[str] | None = None) -> bytes:
    """A GIF of 2-D point clouds, each frame (N, 2) with coordinates in [-limit, limit]: one dark pixel per point."""
    canvases = []
    for points in frames:
        points = np.asarray(points.cpu() if isinstance(points, torch.Tensor) else points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"each frame must be (N, 2) points, got shape {points.shape}")
        canvas = np.full((1, size, size, 3), 255, np.uint8)  # a batch of one picture, for animation_gif
        pixels = ((points / limit + 1) / 2 * (size - 1)).round().astype(int)
        inside = (pixels >= 0).all(1) & (pixels < size).all(1)
        canvas[0, size - 1 - pixels[inside, 1], pixels[inside, 0]] = (30, 60, 160)  # y grows upwards
        canvases.append(canvas)
    return animation_gif(canvases, nrow=1, duration_ms=duration_ms, captions=captions)


def show_points_animation(frames: list, limit: float = 2.5, duration_ms: int = 80, captions: list[str] | None = None, width: int = 360):
    """Display the GIF of `points_gif` in a notebook."""
    display_gif(points_gif(frames, limit, duration_ms=duration_ms, captions=captions), width)
