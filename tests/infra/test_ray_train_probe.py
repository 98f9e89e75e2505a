"""SyncBatchNorm refuses CPU tensors inside a process group, as under Ray Train on CPU workers.

Why ``nas train --workers N`` on CPUs normalizes each worker's share of the batch (docs/training.md,
"On several workers or a cluster"). That two workers match one process computing per-share
BatchNorm, and that a dead worker resumes from Ray Train's checkpoint, is tested on effnas's own
trainer (tests/nas/train/test_distributed.py), where the Ray Train probes that once stood here went.
"""

from __future__ import annotations

import pytest
import torch


def test_sync_batchnorm_refuses_cpu_tensors(tmp_path):
    """Within a process group (as under Ray Train), SyncBatchNorm's forward rejects CPU input."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        layer = torch.nn.SyncBatchNorm(4)
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            layer(torch.randn(8, 4))
    finally:
        torch.distributed.destroy_process_group()
