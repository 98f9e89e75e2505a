"""How long ``nas export`` takes: every format for B0, S and a spec from the quick search's space.

Fresh weights (seed 0), each net at the tests' size (64 px, the quick spec's 32) and at its eval
size, one export after another in this process, 2 torch threads. Reported per export: the time to
write the files (``ExportResult.seconds``) and the time with the check that loads them back and
compares them with effnas's model. The table in docs/benchmarks.md is the eval-size rows.

    python bench/export_times.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import torch

from nas.export.writer import export_model
from nas.search import SearchConfig
from searchspace import load_arch

SUFFIXES = {"pytorch": "py", "torchscript": "pt", "onnx": "onnx", "export": "pt2"}


def main() -> None:
    torch.set_num_threads(2)
    space = SearchConfig.load(Path(__file__).parents[1] / "configs" / "quick.yaml").space
    nets = {"b0": load_arch("b0"), "s": load_arch("s"), "quick": space.sample(random.Random(0))}
    print(f"{'net':6} {'size':>4} {'format':12} {'write s':>8} {'with check s':>13}")
    with tempfile.TemporaryDirectory() as folder:
        for name, spec in nets.items():
            for size in sorted({min(64, spec.eval_resolution), spec.eval_resolution}):
                for format, suffix in SUFFIXES.items():
                    out = Path(folder) / f"{name}{size}.{suffix}"
                    started = time.perf_counter()
                    result = export_model(spec, format, out, image_size=size)
                    total = time.perf_counter() - started
                    print(f"{name:6} {size:4} {format:12} {result.seconds:8.1f} {total:13.1f}")


if __name__ == "__main__":
    main()
