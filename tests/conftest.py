import os

import pytest
import torch

# Tests share two cores with nothing else; more threads only fight each other.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def train_sprites():
    from shared.data import load_sprites

    return load_sprites("train")
