"""Input checks shared by the module: bad input fails at once, saying what was expected."""

from __future__ import annotations

import torch


def describe(value) -> str:
    """A short description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
    return f"{type(value).__name__} {value!r}"


def check_timesteps(t, T: int | None, batch_size: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """t must be a (B,) tensor of timesteps: integers in 0..T, or (T None) flow times, floats in [0, 1]."""
    continuous = T is None
    if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.is_floating_point() != continuous or t.dtype == torch.bool:
        kind = "a floating-point tensor" if continuous else "an integer tensor"
        shape = f"({batch_size},)" if batch_size is not None else "(B,)"
        raise ValueError(f"t must be {kind} of shape {shape}{' (flow times in [0, 1])' if continuous else ''}, got {describe(t)}")
    if batch_size is not None and t.shape[0] != batch_size:
        raise ValueError(f"t must have shape ({batch_size},), one per image, got {describe(t)}")
    if device is not None and t.device != device:
        raise ValueError(f"t is on {t.device} but x is on {device}; make it with device=x.device")
    high = 1 if continuous else T
    if t.numel() and (float(t.min()) < 0 or float(t.max()) > high):
        raise ValueError(f"t must lie in {'[0, 1]' if continuous else f'0..{T}'}, got values from {t.min().item()} to {t.max().item()}")
    return t


def check_images(x, config, weight: torch.Tensor) -> None:
    """A network's input must be a (B, C, H, W) batch on its device and in its dtype."""
    expected = (config.image_channels, config.image_size, config.image_size)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}), got {describe(x)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device} but the model is on {weight.device}; move it with x.to({str(weight.device)!r})")
    if x.dtype != weight.dtype:
        raise ValueError(f"x has dtype {x.dtype} but the model's weights are {weight.dtype}; convert it with x.to({weight.dtype})")


_UNFINISHED: set = set()  # exercises already named as unfinished, so each is named once per session


def yours_or_course(function, fallback, exercise, *example):
    """`function` (a student's) if it runs on a small `example`; else, naming the exercise once, the course's `fallback`.

    Only an unfinished exercise (its stub raises NotImplementedError) falls back, so a demo still draws;
    any other error in a student's code is shown, since it is theirs to fix.
    """
    try:
        function(*example)
        return function
    except NotImplementedError:
        if exercise not in _UNFINISHED:
            _UNFINISHED.add(exercise)
            print(f"Exercise {exercise} ({function.__name__}), or one it builds on, is not finished: "
                  "the demos use the course's version meanwhile.")
        return fallback
