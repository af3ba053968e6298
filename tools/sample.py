"""Generate sprites from shipped weights: `python -m tools.sample --weights context --label food`.

Writes an .npz with `images` (N, 16, 16, 3) uint8 and `labels` (N,) int64 (the
asked-for group, or -1 for unconditional samples), and a PNG grid. The same
seed gives the same sprites.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.data import GROUPS, context_vector, group_index, to_uint8
from shared.device import pick_device
from shared.distillation import student_sampler
from shared.guidance import ClassifierFreeGuidance, ClassifierGuidance
from shared.plotting import grid_image
from shared.samplers import FLOW_SAMPLERS, SAMPLERS, DDIMSampler, generate, make_sampler
from shared.weights import WeightsError, available_weights, load_model, manifest_entry

# Few steps suffice for the deterministic samplers (see Lab 4); DDPM needs them all.
DEFAULT_STEPS = {"ddpm": None, "ddim": 25, "dpmsolver": 10, "unipc": 10, "euler": 20, "heun": 5}
# Sprites per network call: large enough to keep the CPU busy, small enough that memory
# stays flat however large --n is (benchmarks/sample_speed.py measures it).
CHUNK = 256
GRID_MAX = 256  # the PNG shows at most this many sprites
DENOISER_KINDS = ("denoiser", "stepwise_denoiser")  # the manifest kinds that sample sprites


def keep_freed_memory() -> None:
    """Let glibc's malloc keep the memory of freed activations for the next network call.

    A call on a chunk allocates and frees blocks of several megabytes. By default glibc maps
    blocks that large afresh and unmaps them when freed, or trims its heap, so every call
    faults its memory in again page by page: about a quarter of a call's time on 2 cores
    (benchmarks/sample_speed.py). Kept, memory stays at one chunk's peak. Without glibc
    (macOS, Windows) this does nothing.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # Windows has no CDLL(None), macOS no mallopt
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest: blocks below 32 MB come from the heap
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # and the heap is not given back between calls


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.sample", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="unconditional", help="name in weights/manifest.json (default: unconditional)")
    parser.add_argument("--n", type=int, default=64, help="number of sprites (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--sampler", default=None, choices=sorted(SAMPLERS),
                        help="sampler (default: ddpm, or heun for a flow model; a distilled student always uses its own DDIM grid)")
    parser.add_argument("--steps", type=int, default=None,
                        help="number of denoising steps (default: all T for ddpm, 25 for ddim, 10 for dpmsolver and unipc, "
                             "20 for euler, 5 for heun, a student's own count)")
    parser.add_argument("--eta", type=float, default=None,
                        help="DDIM's noise scale in [0, 1] (with --sampler ddim; default 0, deterministic; 1 is DDPM-like)")
    parser.add_argument("--label", default=None, help=f"group index 0-{len(GROUPS) - 1} or name, e.g. 'Food & Drink' or food; absent: unconditional")
    parser.add_argument("--guidance", type=float, default=None, metavar="W",
                        help="classifier-free guidance scale w >= 0 (with --label and context weights)")
    parser.add_argument("--classifier-scale", type=float, default=None, metavar="S",
                        help="classifier guidance scale s >= 0 towards --label, with the noise-aware 'guidance_classifier'")
    parser.add_argument("--out", type=Path, default=Path("samples.npz"), help="output .npz (default: samples.npz)")
    parser.add_argument("--grid", type=Path, default=None, help=f"output PNG grid of the first {GRID_MAX} sprites (default: the .npz path with .png)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda", "mps"], help="default: CUDA, then MPS, then CPU")
    parser.add_argument("--chunk", type=int, default=CHUNK, help=f"sprites per network call (default {CHUNK}; memory grows with it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 100_000:
        parser.error(f"--n must be between 1 and 100000, got {args.n}")
    if not 16 <= args.chunk <= 100_000 or args.chunk % 16:
        parser.error(f"--chunk must be a multiple of 16 between 16 and 100000, got {args.chunk}")
    if args.out.suffix != ".npz":
        parser.error(f"--out must end in .npz, got {args.out}")
    grid_path = args.grid or args.out.with_suffix(".png")
    if grid_path.suffix.lower() != ".png":
        parser.error(f"--grid must end in .png, got {grid_path}")
    try:
        entry = manifest_entry(args.weights)
    except WeightsError as error:
        parser.error(str(error))
    if entry["kind"] not in DENOISER_KINDS:
        parser.error(f"--weights {args.weights!r} is a {entry['kind']}, not a denoiser; choose one of: "
                     + ", ".join(n for n in available_weights() if manifest_entry(n)["kind"] in DENOISER_KINDS))
    student = entry.get("sampling")
    if student is not None:
        own_steps = len(student["levels"]) - 1
        if args.sampler not in (None, student["sampler"]) or args.steps not in (None, own_steps):
            parser.error(f"--weights {args.weights!r} is a distilled {own_steps}-step student: it samples only on its own grid "
                         f"({student['sampler']}, {own_steps} steps); leave out --sampler and --steps")
        if args.guidance is not None or args.classifier_scale is not None or args.label is not None:
            parser.error(f"--weights {args.weights!r} is an unconditional distilled student: --label and guidance do not apply")
        if args.eta is not None:
            parser.error(f"--weights {args.weights!r} is a distilled student: it samples deterministically (no --eta)")
        args.sampler, args.steps = student["sampler"], own_steps
    flow = entry["config"].get("schedule") == "flow"
    preset = entry.get("default_sampling", {})
    if args.sampler is None and args.steps is None and preset:
        args.sampler, args.steps = preset["sampler"], preset["steps"]
    args.sampler = args.sampler or ("heun" if flow else "ddpm")
    if (args.sampler in FLOW_SAMPLERS) != flow:
        usable = FLOW_SAMPLERS if flow else sorted(set(SAMPLERS) - set(FLOW_SAMPLERS))
        parser.error(f"--weights {args.weights!r} is {'a flow' if flow else 'a diffusion'} model: --sampler must be one of {', '.join(usable)}")
    if flow and (args.label is not None or args.guidance is not None or args.classifier_scale is not None):
        parser.error(f"--weights {args.weights!r} is an unconditional flow model: --label and guidance do not apply")
    if args.eta is not None and args.sampler != "ddim":
        parser.error(f"--eta sets DDIM's noise; it needs --sampler ddim, not {args.sampler}")
    if args.eta is not None and not 0 <= args.eta <= 1:
        parser.error(f"--eta must be between 0 and 1, got {args.eta}")
    contexts, labels = None, np.full(args.n, -1, dtype=np.int64)
    trained_with_context = entry.get("training", {}).get("p_uncond", 1) < 1
    guided = args.guidance is not None or args.classifier_scale is not None
    if args.guidance is not None and args.classifier_scale is not None:
        parser.error("choose one of --guidance (classifier-free) and --classifier-scale (classifier guidance)")
    for flag, value in (("--guidance", args.guidance), ("--classifier-scale", args.classifier_scale)):
        if value is not None and not 0 <= value <= 100:
            parser.error(f"{flag} must be between 0 and 100, got {value}")
    if guided and args.label is None:
        parser.error("guidance steers towards a group: give --label GROUP")
    if args.guidance is not None and not trained_with_context:
        parser.error(f"--guidance needs weights trained with context dropout, such as 'context'; {args.weights!r} was trained without context")
    if args.label is not None:
        try:
            label = group_index(args.label)
        except ValueError as error:
            parser.error(str(error))
        if not trained_with_context and args.classifier_scale is None:
            parser.error(f"--weights {args.weights!r} was trained without context, so --label has no effect; "
                         "use --weights context, or --classifier-scale S to steer it with the guidance classifier")
        if trained_with_context:
            contexts = context_vector(label).repeat(args.n, 1)
        labels[:] = label
    T = entry["config"]["T"]
    if args.steps is None:
        args.steps = DEFAULT_STEPS[args.sampler]
    if args.steps is not None and not 1 <= args.steps <= (1000 if flow else T):
        parser.error(f"--steps must be between 1 and {1000 if flow else T}, got {args.steps}")

    try:
        device = pick_device(args.device)
        model = load_model(args.weights, device)
    except (WeightsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    schedule = model.schedule
    if args.guidance is not None:
        model = ClassifierFreeGuidance(model, args.guidance)
    if args.classifier_scale is not None:
        try:
            classifier = load_model("guidance_classifier", device)
        except WeightsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if student is not None:
        sampler = student_sampler(entry, schedule)
    elif args.eta is not None:
        sampler = DDIMSampler(schedule, eta=args.eta)
    else:
        sampler = make_sampler(args.sampler, schedule)
    # One generator draws every chunk's noise, then its fresh noise, so a seed gives the same sprites
    # whatever the chunk size; the sprites go straight into the uint8 output, so memory stays flat in --n.
    generator = torch.Generator().manual_seed(args.seed)
    keep_freed_memory()  # for the rest of this process: a command's choice, which a library should not make
    images = np.empty((args.n, 16, 16, 3), dtype=np.uint8)
    start = time.perf_counter()
    for first in range(0, args.n, args.chunk):
        rows = slice(first, min(first + args.chunk, args.n))
        noise = torch.randn(rows.stop - first, 3, 16, 16, generator=generator)
        chunk_contexts = None if contexts is None else contexts[rows]
        chunk_model = model
        if args.classifier_scale is not None:
            chunk_model = ClassifierGuidance(model, classifier, torch.as_tensor(labels[rows], device=device), args.classifier_scale)
        run = generate(chunk_model, sampler, noise, args.steps, chunk_contexts, generator, progress=not args.quiet and first == 0)
        images[rows] = to_uint8(run.images)
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images, labels=labels)
    shown = images[:GRID_MAX]
    Image.fromarray(grid_image(shown, nrow=min(16, int(np.ceil(np.sqrt(len(shown))))), upscale=4)).save(grid_path)
    print(f"{args.n} sprites from {args.weights!r} with {args.sampler} ({args.steps or T} steps) in {seconds:.1f} s "
          f"({args.n / seconds:.0f} sprites/s) -> {args.out}, {grid_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
