"""Build data/sprites16.npz: 16x16 colour emoji sprites labelled by Unicode group.

Sources (Debian packages, needed only to rebuild; the built file ships):
  fonts-noto-color-emoji  /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
  unicode-data            /usr/share/unicode/emoji/emoji-test.txt

Rebuild from the repository root:
  apt-get install fonts-noto-color-emoji unicode-data
  .venv/bin/python data/build_sprites.py

The output is deterministic for a given font and emoji list: the same inputs
give the same bytes, and data/manifest.json records the sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST_PATH = Path("/usr/share/unicode/emoji/emoji-test.txt")
DATA_DIR = Path(__file__).resolve().parent
OUT_PATH = DATA_DIR / "sprites16.npz"
MANIFEST_PATH = DATA_DIR / "manifest.json"

# Noto Color Emoji is a bitmap font whose only strike is 109 px.
FONT_SIZE = 109
SPRITE_SIZE = 16
VALIDATION_FRACTION = 0.15
SPLIT_SEED = 2020  # the year of Ho et al.'s DDPM paper

SKIN_TONE_MODIFIERS = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
LINE_PATTERN = re.compile(
    r"^(?P<codes>[0-9A-F ]+?)\s*;\s*(?P<status>[a-z-]+)\s*#\s*\S+\s+E\d+\.\d+\s+(?P<name>.+)$"
)


def read_emoji_list(path: Path = EMOJI_TEST_PATH) -> list[dict]:
    """Every fully-qualified emoji outside the Component group, in file order."""
    entries, group = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            continue
        match = LINE_PATTERN.match(line)
        if not match or match["status"] != "fully-qualified" or group == "Component":
            continue
        codepoints = [int(code, 16) for code in match["codes"].split()]
        entries.append(
            {
                "char": "".join(chr(code) for code in codepoints),
                "name": match["name"].strip(),
                "group": group,
                # Skin-tone variants share a base; the split keeps a base on one side,
                # so validation sprites are not recolourings of training sprites.
                "base": tuple(code for code in codepoints if code not in SKIN_TONE_MODIFIERS),
            }
        )
    return entries


def render_sprite(char: str, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """Draw one emoji in colour, crop to the glyph, centre on a white square, shrink."""
    canvas = Image.new("RGBA", (4 * FONT_SIZE, 2 * FONT_SIZE), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((FONT_SIZE // 2, FONT_SIZE // 4), char, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise RuntimeError(f"the font draws nothing for {char!r}")
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    # Composite before shrinking: resampling premultiplied colours against white
    # avoids dark fringes from the transparent pixels' arbitrary RGB.
    white = Image.new("RGBA", square.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, square).convert("RGB")
    small = flat.resize((SPRITE_SIZE, SPRITE_SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(small, dtype=np.uint8)


def split_by_base(entries: list[dict], labels: np.ndarray, n_groups: int) -> np.ndarray:
    """Seeded split, stratified by group, that keeps skin-tone variants together."""
    rng = np.random.default_rng(SPLIT_SEED)
    is_validation = np.zeros(len(entries), dtype=bool)
    for group in range(n_groups):
        bases = sorted({entries[i]["base"] for i in np.flatnonzero(labels == group)})
        order = rng.permutation(len(bases))
        n_val = max(1, round(VALIDATION_FRACTION * len(bases)))
        chosen = {bases[i] for i in order[:n_val]}
        for i in np.flatnonzero(labels == group):
            is_validation[i] = entries[i]["base"] in chosen
    return is_validation


def deterministic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed stamps the current time into the zip; fix it so rebuilds match."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT_PATH)
    args = parser.parse_args()

    for path, package in [(FONT_PATH, "fonts-noto-color-emoji"), (EMOJI_TEST_PATH, "unicode-data")]:
        if not path.exists():
            raise SystemExit(f"{path} is missing: install the Debian package {package}")
    if not features.check("raqm"):
        raise SystemExit("Pillow lacks libraqm: flags and ZWJ sequences would draw as several glyphs")

    entries = read_emoji_list()
    group_names = list(dict.fromkeys(entry["group"] for entry in entries))
    labels = np.array([group_names.index(entry["group"]) for entry in entries], dtype=np.int64)
    font = ImageFont.truetype(str(FONT_PATH), FONT_SIZE)
    images = np.stack([render_sprite(entry["char"], font) for entry in entries])
    is_validation = split_by_base(entries, labels, len(group_names))

    deterministic_npz(
        args.out,
        {
            "images": images,  # (N, 16, 16, 3) uint8, white background
            "labels": labels,  # (N,) index into group_names
            "group_names": np.array(group_names),
            "chars": np.array([entry["char"] for entry in entries]),
            "names": np.array([entry["name"] for entry in entries]),
            "is_validation": is_validation,
        },
    )
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    counts = {name: int((labels == i).sum()) for i, name in enumerate(group_names)}
    manifest = {
        "file": args.out.name,
        "sha256": digest,
        "n_sprites": len(entries),
        "n_validation": int(is_validation.sum()),
        "per_group": counts,
        "sources": {
            "font": "Noto Color Emoji 2.042 (Debian fonts-noto-color-emoji 2.042-0+deb12u1)",
            "emoji_list": "Unicode emoji-test.txt 15.0 (Debian unicode-data 15.0.0-1)",
        },
        "build_command": "python data/build_sprites.py",
    }
    if args.out == OUT_PATH:
        MANIFEST_PATH.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(manifest, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
