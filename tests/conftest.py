"""Shared test setup: small CPU-only runs, deterministic, no network."""

from __future__ import annotations

import os

# Every Ray these tests start listens on 127.0.0.1 only; Ray reads this when first imported.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import pytest
import torch

# Tests run on 2-core CI machines: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """One torch thread for the test: results are bit-identical only at a fixed thread count, a
    Ray worker with one CPU runs so, and the 2-core machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_spec():
    """A small, fast two-stage net that still has every block kind (for unit tests)."""
    from searchspace import ArchSpec, StageSpec

    return ArchSpec(
        name="tiny",
        stem_channels=8,
        stages=(
            StageSpec("fused", repeats=1, kernel=3, stride=1, expand_ratio=1, out_channels=8),
            StageSpec("fused", repeats=2, kernel=3, stride=2, expand_ratio=4, out_channels=16),
            StageSpec(
                "mbconv",
                repeats=2,
                kernel=3,
                stride=2,
                expand_ratio=4,
                out_channels=24,
                se_ratio=0.25,
            ),
        ),
        head_channels=64,
        num_classes=10,
        train_resolution=32,
        eval_resolution=32,
    )
