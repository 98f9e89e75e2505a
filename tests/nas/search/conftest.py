"""What the search tests share as fixtures: one local Ray for a module's in-process searches."""

from __future__ import annotations

import pytest

from nas.cluster import ray_session


@pytest.fixture(scope="module")
def module_ray():
    """A local Ray for the rest of the module, started as ``run_search`` starts its own
    (``nas.cluster.ray_session(None)``) and stopped when the module ends.

    ``run_search`` uses a Ray this process already runs and leaves it running, so the module's
    in-process searches share this one instead of each starting and stopping a Ray of their own
    (seconds each on two cores). Each search still gets new trial actors. Ray's workers get the
    environment this process had when the Ray started: a test whose trials read a variable it
    sets (``EFFNAS_CACHE``...) runs its searches in a Ray it starts after setting it."""
    with ray_session(None):
        yield
