"""The course's weight factory: the commands that train, distil and sample from the shipped weights.

    python -m tools.train    denoiser|classifier --name NAME ...   (every denoiser but the students, both classifiers)
    python -m tools.distill  knowledge|progressive ...             (Lab 6's distilled students)
    python -m tools.reflow   ...                                   (Lab 7's reflowed flow model)
    python -m tools.sample   --weights NAME ...                    (sprites from any shipped denoiser)

weights/manifest.json records the exact command behind every file. The labs never import this
package: what they need lives in shared/.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import torch
from safetensors.torch import save_file

from shared.data import sha256_of
from shared import weights
from shared.weights import MODEL_KINDS


def save_model(model: torch.nn.Module, name: str, kind: str, info: dict) -> dict:
    """Write weights/<name>.safetensors and its manifest entry (config, sha256, size and `info`)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {list(MODEL_KINDS)}, got {kind!r}")
    if "train_command" not in info:
        raise ValueError("info must record the train_command that re-creates these weights")
    weights_dir, manifest_path = weights.WEIGHTS_DIR, weights.MANIFEST_PATH  # looked up now, so tests can point them elsewhere
    weights_dir.mkdir(exist_ok=True)
    path = weights_dir / f"{name}.safetensors"
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(path), metadata={"name": name, "kind": kind, "config": json.dumps(asdict(model.config))})
    entry = {
        "file": path.name,
        "kind": kind,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "config": asdict(model.config),
        **info,
    }
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[name] = entry
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return entry
