"""The emoji sprites as tensors, and the context vectors that name their groups.

Images are (N, 3, 16, 16) float32 in [-1, 1], so pure noise N(0, I) and a sprite have comparable
scale. A context is a (9,) vector of group weights: one-hot for one group, a mixture (non-negative,
summing to 1) such as half food and half smiley, or all zeros for "no context".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
SPRITES_PATH = DATA_DIR / "sprites16.npz"

GROUPS = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places", "Activities",
          "Objects", "Symbols", "Flags")
# Short names a student may type, group by group: "food" is easier than "Food & Drink".
SHORT_NAMES = ("smileys smiley emotion faces face", "people body", "animals animal nature", "food drink", "travel places",
               "activities activity", "objects object", "symbols symbol", "flags flag")
GROUP_ALIASES = {alias: group for group, names in enumerate(SHORT_NAMES) for alias in names.split()}


@dataclass
class Sprites:
    images: torch.Tensor  # (N, 3, 16, 16) float32 in [-1, 1]
    labels: torch.Tensor  # (N,) int64 group index
    chars: list[str]  # the emoji themselves
    names: list[str]  # Unicode names, e.g. "grinning face"

    @property
    def contexts(self) -> torch.Tensor:
        """One-hot context vectors (N, 9)."""
        return torch.nn.functional.one_hot(self.labels, len(GROUPS)).float()

    def __len__(self) -> int:
        return len(self.labels)


def group_index(group: int | str) -> int:
    """The index of a group given its index, its full name or a short alias (case-insensitive)."""
    if isinstance(group, (int, np.integer)) and not isinstance(group, bool):
        if 0 <= group < len(GROUPS):
            return int(group)
    elif isinstance(group, str):
        key = group.strip().lower()
        for i, name in enumerate(GROUPS):
            if key == name.lower():
                return i
        if key in GROUP_ALIASES:
            return GROUP_ALIASES[key]
        if key.isdigit():
            return group_index(int(key))
    raise ValueError(f"unknown group {group!r}; expected an index 0..{len(GROUPS) - 1} or one of {list(GROUPS)}")


def context_vector(groups: int | str | dict | None) -> torch.Tensor:
    """A (9,) context: one group (name or index), a {group: weight} mixture normalised to sum 1, or None for no context."""
    vector = torch.zeros(len(GROUPS))
    if groups is None:
        return vector
    if isinstance(groups, (list, tuple)):
        raise ValueError("context_vector makes one context; for one per sprite, stack them: "
                         "torch.stack([context_vector(g) for g in groups])")
    if not isinstance(groups, dict):
        groups = {groups: 1.0}
    for group, weight in groups.items():
        if not weight >= 0:
            raise ValueError(f"mixture weights must be non-negative, got {weight} for {group!r}")
        vector[group_index(group)] += float(weight)
    if vector.sum() <= 0:
        raise ValueError("a mixture needs at least one positive weight; use None for no context")
    return vector / vector.sum()


def check_contexts(contexts: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Validate a (B, 9) batch of contexts: each row a mixture summing to 1, or all zeros (no context)."""
    if not isinstance(contexts, torch.Tensor) or contexts.ndim != 2 or contexts.shape[1] != len(GROUPS):
        raise ValueError(f"contexts must have shape (B, {len(GROUPS)}), got {getattr(contexts, 'shape', type(contexts))}")
    if not contexts.is_floating_point():
        raise ValueError(f"contexts must be floating-point, got {contexts.dtype} (F.one_hot gives integers: add .float())")
    if batch_size is not None and contexts.shape[0] != batch_size:
        raise ValueError(f"expected {batch_size} contexts, got {contexts.shape[0]}")
    sums = contexts.sum(dim=1)
    valid = (contexts >= 0).all(dim=1) & (((sums - 1).abs() < 1e-4) | (sums == 0))
    if not bool(valid.all()):
        raise ValueError("each context row must be non-negative and sum to 1 (a mixture of groups) or be all zeros (no context)")
    return contexts


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sprites(split: str = "train") -> Sprites:
    """The shipped sprites: split is "train", "validation" or "all"."""
    if split not in ("train", "validation", "all"):
        raise ValueError(f"split must be 'train', 'validation' or 'all', got {split!r}")
    if not SPRITES_PATH.exists():
        raise FileNotFoundError(f"{SPRITES_PATH} is missing: it ships with the repository (rebuild: python data/build_sprites.py)")
    expected = json.loads((DATA_DIR / "manifest.json").read_text())["sha256"]
    if sha256_of(SPRITES_PATH) != expected:
        raise ValueError(f"{SPRITES_PATH} does not match the sha256 in data/manifest.json: the file is damaged or a Git LFS pointer")
    with np.load(SPRITES_PATH, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if tuple(arrays["group_names"]) != GROUPS:
        raise ValueError(f"data groups {tuple(arrays['group_names'])} differ from shared.data.GROUPS")
    keep = {"train": ~arrays["is_validation"], "validation": arrays["is_validation"]}.get(split, slice(None))
    images = torch.from_numpy(arrays["images"][keep]).permute(0, 3, 1, 2).float() / 127.5 - 1
    return Sprites(
        images=images.contiguous(),
        labels=torch.from_numpy(arrays["labels"][keep]),
        chars=arrays["chars"][keep].tolist(),
        names=arrays["names"][keep].tolist(),
    )


def to_uint8(images) -> np.ndarray:
    """(N, 3, H, W) tensor in [-1, 1] -> (N, H, W, 3) uint8, clipping what lies outside; a uint8 (N, H, W, 3) array passes as it is."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3:
        return images
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (N, 3, H, W) tensor in [-1, 1] or a uint8 (N, H, W, 3) array, "
                         f"got {getattr(images, 'dtype', type(images).__name__)} of shape {getattr(images, 'shape', None)}")
    scaled = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
