"""Shared fixtures of the unit tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """A tiny gaussian1d VAE (l_d = 4) and functional trained one epoch on 60 instances, with a 3-instance test set.

    Returns ``{"data", "test", "vae", "functional"}`` paths.  Read-only: tests copy what they change.
    """
    from vaedft.data.generate import generate_dataset
    from vaedft.models import functional_preset, vae_preset
    from vaedft.physics import get_testbed
    from vaedft.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny_pair")
    g1 = get_testbed("gaussian1d")
    data = generate_dataset(g1, root / "train.h5", n=60, seed=1, progress=False)
    test = generate_dataset(g1, root / "test.h5", n=3, seed=2, progress=False)
    small = {"channels": (4,) * 5, "kernel": 3}
    kw = {"config": TrainConfig(epochs=1, lr=1e-3, batch_size=40), "device": "cpu", "progress": False}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train("vae", data, root / "vae", model_config=vae_preset("gaussian1d", 4).replace(**small, dense=(8, 8)),
              **kw)
        train("functional", data, root / "functional",
              model_config=functional_preset("gaussian1d").replace(**small), **kw)
    finally:
        torch.set_num_threads(threads)
    return {"data": data, "test": test, "vae": root / "vae", "functional": root / "functional"}


@pytest.fixture(scope="module")
def one_thread():
    """Single-threaded torch for a module: its many small training/minimization steps are
    faster that way on 2 cores and do not collapse when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
