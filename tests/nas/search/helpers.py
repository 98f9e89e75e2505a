"""What the search tests share: a small space, configs, a stand-in record."""

from __future__ import annotations

from pathlib import Path

import yaml

from nas.search import SearchConfig
from searchspace import ArchSpec, build_model, count_parameters
from tests import REPO

SMALL_SPACE = {
    "stem_channels": 8,
    "head_channels": 32,
    "num_classes": 10,
    "train_resolution": 32,
    "eval_resolution": 32,
    "stages": [
        {"out_channels": 8, "stride": 1, "repeats": [1, 2]},
        {"out_channels": 16, "stride": 2, "repeats": [1, 2]},
    ],
}


def small_config(tmp_path: Path, **overrides) -> SearchConfig:
    data = {
        "study": "t",
        "runs_dir": str(tmp_path / "runs"),
        "dataset": "synthetic",
        "image_size": 32,
        "batch_size": 16,
        "epochs": 1,
        "trials": 6,
        "concurrent": 2,
        "early_stopping": False,
        "sampler": "random",
        "space": SMALL_SPACE,
    }
    data.update(overrides)
    return SearchConfig.from_dict(data)


def fake_record(spec: ArchSpec, accuracy: float) -> dict:
    params = count_parameters(build_model(spec))
    return {
        "spec": spec.to_string(),
        "hash": spec.hash,
        "accuracy": accuracy,
        "step_time_ms": 10.0,
        "step_time_norm": 1.0,
        "params": params,
        "reward": accuracy * (params / 1e4) ** -0.05,
        "status": "ok",
        "failure": "",
    }


def write_config(tmp_path: Path, **overrides) -> Path:
    data = yaml.safe_load((REPO / "configs" / "quick.yaml").read_text())
    data["runs_dir"] = str(tmp_path / "runs")
    data.update(overrides)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
