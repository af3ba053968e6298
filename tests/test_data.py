"""The shipped sprite file: shape, labels, split and checksum; context vectors."""

import json

import numpy as np
import pytest
import torch

from shared.data import (
    DATA_DIR, GROUPS, SPRITES_PATH, check_contexts, context_vector, from_uint8, group_index, load_sprites, sha256_of, to_uint8,
)


def test_file_matches_manifest_checksum():
    manifest = json.loads((DATA_DIR / "manifest.json").read_text())
    assert sha256_of(SPRITES_PATH) == manifest["sha256"]


def test_arrays_have_expected_shapes_and_labels():
    with np.load(SPRITES_PATH, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
        assert images.shape == (3655, 16, 16, 3) and images.dtype == np.uint8
        assert labels.shape == (3655,) and set(labels.tolist()) == set(range(9))
        assert tuple(archive["group_names"]) == GROUPS
        assert len(archive["chars"]) == len(archive["names"]) == 3655
        assert archive["names"][0] == "grinning face" and archive["chars"][0] == "\U0001F600"
        # White background: the corners of almost every sprite are white.
        assert (images[:, 0, 0] > 240).all(axis=1).mean() > 0.7


def test_split_is_disjoint_stratified_and_keeps_skin_tones_together():
    train, validation = load_sprites("train"), load_sprites("validation")
    assert len(train) + len(validation) == 3655
    assert 0.12 < len(validation) / 3655 < 0.18
    assert set(validation.labels.tolist()) == set(range(9)), "every group appears in validation"
    tones = ": light skin tone", ": medium skin tone"
    train_bases = {name.split(":")[0] for name in train.names if any(name.endswith(t) for t in tones)}
    validation_bases = {name.split(":")[0] for name in validation.names if any(name.endswith(t) for t in tones)}
    assert not train_bases & validation_bases


def test_images_are_in_minus_one_one(train_sprites):
    assert train_sprites.images.dtype == torch.float32
    assert train_sprites.images.shape[1:] == (3, 16, 16)
    assert train_sprites.images.min() >= -1 and train_sprites.images.max() <= 1
    assert torch.equal(train_sprites.contexts.argmax(1), train_sprites.labels)


def test_uint8_round_trip(train_sprites):
    assert torch.allclose(from_uint8(to_uint8(train_sprites.images[:10])), train_sprites.images[:10])


def test_context_vectors():
    assert torch.equal(context_vector("Food & Drink"), torch.eye(9)[3])
    assert torch.equal(context_vector("food"), context_vector(3))
    mix = context_vector({"food": 1, "smileys": 1})
    assert torch.allclose(mix, (torch.eye(9)[3] + torch.eye(9)[0]) / 2)
    assert torch.equal(context_vector(None), torch.zeros(9))
    check_contexts(torch.stack([mix, context_vector(None), context_vector("flags")]))


@pytest.mark.parametrize("bad", ["dragons", 9, -1, 2.5])
def test_unknown_group_says_what_is_expected(bad):
    with pytest.raises(ValueError, match="expected"):
        group_index(bad)


def test_bad_contexts_are_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        check_contexts(torch.ones(2, 9))
    with pytest.raises(ValueError, match=r"\(B, 9\)"):
        check_contexts(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="non-negative"):
        context_vector({"food": -1, "flags": 2})
    with pytest.raises(ValueError, match=r"F.one_hot gives integers: add .float\(\)"):
        check_contexts(torch.nn.functional.one_hot(torch.tensor([3, 8]), 9))
    with pytest.raises(ValueError, match=r"stack them: torch.stack\(\[context_vector\(g\) for g in groups\]\)"):
        context_vector(["food", "flags"])


def test_bad_split_name():
    with pytest.raises(ValueError, match="'train', 'validation' or 'all'"):
        load_sprites("test")
