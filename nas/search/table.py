"""A recorded benchmark table: every net of a small space trained with a search's proxy, per seed.

``bench/record_table.py`` writes it (:data:`TABLE_FORMAT`, gzip-compressed JSON); the replay
(:mod:`nas.search.replay`) runs searches against it with a simulated clock. One file holds the
recorded search ``config``, the ``seeds``, per net its spec, counts, step times and one run per
seed (each epoch's held-out accuracy, training loss and CPU seconds, the test accuracy), the
``reference`` net's figures, how the ``timing`` passes ran, and the recording's ``provenance``.
Every field: docs/benchmarks.md, "Many seeds from one recording".
"""

from __future__ import annotations

import gzip
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.search.config import SearchConfig
from searchspace.files import atomic_write

__all__ = [
    "TABLE_FORMAT",
    "Net",
    "Run",
    "Table",
    "clock_scales",
    "read_table_data",
    "synthetic_table_data",
    "write_table_data",
]

#: The ``format`` of a table file this module reads.
TABLE_FORMAT = "effnas-table/1"


@dataclass(frozen=True)
class Run:
    """One net trained once, with one seed (see the module)."""

    status: str
    accuracy: tuple[float, ...]
    train_loss: tuple[float, ...]
    test_accuracy: float | None
    cpu_seconds: float
    cpu_at_epoch: tuple[float, ...]
    epoch_cpu_seconds: tuple[float, ...]
    failure: str = ""
    #: The index of the recording session (``provenance["sessions"]``) that trained it.
    session: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        return cls(
            status=data["status"],
            accuracy=tuple(float(v) for v in data.get("accuracy", ())),
            train_loss=tuple(float(v) for v in data.get("train_loss", ())),
            test_accuracy=_float_or_none(data.get("test_accuracy")),
            cpu_seconds=float(data["cpu_seconds"]),
            cpu_at_epoch=tuple(float(v) for v in data.get("cpu_at_epoch", ())),
            epoch_cpu_seconds=tuple(float(v) for v in data.get("epoch_cpu_seconds", ())),
            failure=data.get("failure", ""),
            session=None if data.get("session") is None else int(data["session"]),
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def heldout_cpu_seconds(self) -> float:
        """The CPU seconds of one held-out pass: between two epochs' reports, what the training
        epoch did not spend (the median over the epochs after the first; 0 with one epoch)."""
        gaps = [
            self.cpu_at_epoch[k] - self.cpu_at_epoch[k - 1] - self.epoch_cpu_seconds[k]
            for k in range(1, min(len(self.cpu_at_epoch), len(self.epoch_cpu_seconds)))
        ]
        return max(0.0, statistics.median(gaps)) if gaps else 0.0

    def report_times(self, per_epoch: bool) -> tuple[list[float], float]:
        """When, in CPU seconds from its start, a trial of this run reports each epoch and its
        closing record.

        ``per_epoch``: the trial measures held-out accuracy after every epoch (a search with
        early stopping; the recording did so): each epoch's report comes at the CPU time it was
        recorded at, the closing record at the whole run's. Otherwise (no scheduler: held-out
        accuracy after the last epoch only, and no epoch reports) the closing record comes at
        the whole run's time less the held-out passes such a trial does not make.
        """
        if per_epoch:
            return list(self.cpu_at_epoch), self.cpu_seconds
        skipped = max(0, len(self.cpu_at_epoch) - 1) * self.heldout_cpu_seconds
        return [], max(0.0, self.cpu_seconds - skipped)


@dataclass(frozen=True)
class Net:
    """One net of the table: its figures and its runs, by seed."""

    spec: str
    hash: str
    params: int
    flops: int
    step_time_ms: float
    step_time_proxy_ms: float | None
    runs: Mapping[int, Run]
    #: Each timing pass's step time at the final size (``step_time_ms`` is their median).
    step_time_passes_ms: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Net:
        return cls(
            spec=data["spec"],
            hash=data["hash"],
            params=int(data["params"]),
            flops=int(data["flops"]),
            step_time_ms=float(data["step_time_ms"]),
            step_time_proxy_ms=_float_or_none(data.get("step_time_proxy_ms")),
            runs={int(seed): Run.from_dict(run) for seed, run in data.get("runs", {}).items()},
            step_time_passes_ms=_passes(data),
        )

    def step_time_of_pass(self, index: int | None) -> float:
        """The step time timing pass ``index`` measured (None: the median of the passes)."""
        return self.step_time_ms if index is None else self.step_time_passes_ms[index]

    @property
    def test_accuracy(self) -> float | None:
        """The mean test accuracy over the seeds whose run finished (None if none did)."""
        values = [
            r.test_accuracy for r in self.runs.values() if r.ok and r.test_accuracy is not None
        ]
        return statistics.fmean(values) if values else None


@dataclass(frozen=True)
class Table:
    """A recorded table (see the module), read with :meth:`read`."""

    config: SearchConfig
    seeds: tuple[int, ...]
    nets: tuple[Net, ...]
    reference: Mapping[str, Any]
    timing: Mapping[str, Any]
    provenance: Mapping[str, Any]
    #: Per recording session, the factor that brings its runs' CPU seconds to the speed of the
    #: machine that trained the most runs (:func:`clock_scales`); 1 for an unnamed session.
    clock_scales: Mapping[int, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "table") -> Table:
        """Raises:
        ConfigError: not a table of :data:`TABLE_FORMAT`, or one without the step times."""
        if not isinstance(data, Mapping) or data.get("format") != TABLE_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ConfigError(f"{source}: not an effnas table ({TABLE_FORMAT}), got {found!r}")
        reference = data.get("reference") or {}
        if "step_time_ms" not in reference:
            raise ConfigError(f"{source}: no timing pass recorded yet (no reference step time)")
        try:
            nets = tuple(Net.from_dict(net) for net in data["nets"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{source}: a net lacks a figure ({error})") from None
        passes = len(_passes(reference))
        for net in nets:
            if len(net.step_time_passes_ms) != passes:
                raise ConfigError(
                    f"{source}: net {net.hash} has {len(net.step_time_passes_ms)} timing "
                    f"passes, the reference {passes}"
                )
        provenance = data.get("provenance", {})
        return cls(
            config=SearchConfig.from_dict(data["config"], source=f"{source}: config"),
            seeds=tuple(int(seed) for seed in data["seeds"]),
            nets=nets,
            reference=reference,
            timing=data.get("timing", {}),
            provenance=provenance,
            clock_scales=clock_scales(nets, provenance.get("sessions", [])),
        )

    @classmethod
    def read(cls, path: str | Path) -> Table:
        return cls.from_dict(read_table_data(path), source=str(path))

    @property
    def epochs(self) -> int:
        return self.config.epochs

    @property
    def timing_passes(self) -> int:
        """How many timing passes measured every net and the reference (1 if none is kept)."""
        return len(_passes(self.reference))

    def reference_step_time(self, index: int | None) -> float:
        """The reference's step time in timing pass ``index`` (None: the median)."""
        if index is None:
            return float(self.reference["step_time_ms"])
        return _passes(self.reference)[index]

    def clock_scale(self, run: Run) -> float:
        """The factor that brings ``run``'s CPU seconds to the common machine speed."""
        return self.clock_scales.get(run.session, 1.0) if run.session is not None else 1.0

    def by_hash(self) -> dict[str, Net]:
        return {net.hash: net for net in self.nets}

    def missing(self) -> list[tuple[str, int]]:
        """The (net hash, seed) pairs with no run: empty for a complete table."""
        return [(n.hash, s) for n in self.nets for s in self.seeds if s not in n.runs]


def clock_scales(nets: Sequence[Net], sessions: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Per recording session, the factor by which its runs' CPU seconds are multiplied so that
    every run costs what it would have on one machine.

    A recording spans sessions, and sessions may run on machines of different speeds (the same
    net trained on two VMs of one kind took 0.70 of the CPU seconds on one). Sessions are
    grouped by machine (the ``boot_id`` they note; a session without one is a machine of its
    own), and ``log cpu_seconds = net + machine`` is fitted by least squares over every finished
    run that names its session; each machine's factor brings it to the machine that trained the
    most runs. A machine that shares no net with the others cannot be compared: factor 1.
    """

    def machine(session: int) -> str:
        named = sessions[session].get("boot_id") if 0 <= session < len(sessions) else None
        return named or f"session {session}"

    rows = [
        (index, machine(run.session), math.log(run.cpu_seconds))
        for index, net in enumerate(nets)
        for run in net.runs.values()
        if run.ok and run.session is not None and run.cpu_seconds > 0
    ]
    counts: dict[str, int] = {}
    for _, m, _ in rows:
        counts[m] = counts.get(m, 0) + 1
    machines = sorted(counts, key=lambda m: (-counts[m], m))  # ties: by name, not set order
    factors = {m: 1.0 for m in machines}
    if len(machines) > 1:
        # Machines linked through a net trained on both, from the one with the most runs.
        on = {}
        for index, m, _ in rows:
            on.setdefault(index, set()).add(m)
        linked, grew = {machines[0]}, True
        while grew:
            grew = False
            for ms in on.values():
                if ms & linked and not ms <= linked:
                    linked |= ms
                    grew = True
        kept = [r for r in rows if r[1] in linked]
        net_ids = sorted({r[0] for r in kept})
        others = [m for m in machines[1:] if m in linked]
        column = {n: i for i, n in enumerate(net_ids)}
        design = np.zeros((len(kept), len(net_ids) + len(others)))
        for row, (index, m, _) in enumerate(kept):
            design[row, column[index]] = 1.0
            if m in others:
                design[row, len(net_ids) + others.index(m)] = 1.0
        target = np.array([r[2] for r in kept])
        solution = np.linalg.lstsq(design, target, rcond=None)[0]
        for k, m in enumerate(others):
            factors[m] = float(math.exp(-solution[len(net_ids) + k]))
    return {session: factors.get(machine(session), 1.0) for session in range(len(sessions))}


def _passes(data: Mapping[str, Any]) -> tuple[float, ...]:
    """The final-size step time of each timing pass a net's (or the reference's) record keeps,
    or its one step time where it keeps none."""
    passes = (data.get("step_time_passes_ms") or {}).get("final")
    return tuple(float(v) for v in passes) if passes else (float(data["step_time_ms"]),)


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def read_table_data(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a table file (gzip JSON, or plain JSON when not compressed).

    Raises:
        ConfigError: the file cannot be read or is not JSON.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        return json.loads(text)
    except (OSError, ValueError, EOFError) as error:
        raise ConfigError(f"{path}: cannot read the table ({error})") from None


def write_table_data(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write a table atomically as gzip-compressed JSON (reproducible bytes: no timestamp in the
    gzip header)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    return atomic_write(path, gzip.compress(text, compresslevel=9, mtime=0))


def synthetic_table_data(
    config: SearchConfig, seeds: int = 2, *, seed: int = 0, steps_per_epoch: int = 157
) -> dict[str, Any]:
    """A table of made-up but consistent figures for every net of ``config``'s space: for tests
    and for timing the replay without a recording.

    Parameters and FLOPs are the nets' own (counted from the specs); the step time follows the
    FLOPs to a power with a per-net factor (so FLOPs rank it imperfectly); each net has a true
    accuracy that grows with its parameters (and a per-net factor), its runs approach it epoch
    by epoch with seed noise; a run's CPU seconds are its steps times its step time, plus a
    held-out pass per epoch and a setup. Three timing passes scatter around each step time
    (their median) by a few percent, from a generator of their own (the other figures are those
    of a table made without them).
    """
    from searchspace import load_arch
    from searchspace.profile import spec_flops, spec_parameters

    rng = np.random.default_rng(seed)
    timing_rng = np.random.default_rng([seed, 1])

    def passes(step_ms: float) -> list[float]:
        factors = timing_rng.lognormal(0.0, 0.1, size=3)
        return [float(step_ms * f / np.median(factors)) for f in factors]

    epochs = config.epochs
    nets = []
    for spec in config.space.all_specs():
        params = spec_parameters(spec)
        flops = spec_flops(spec, config.timing_size)
        step_ms = 25.0 * (flops / 4e6) ** 0.5 * float(rng.lognormal(0.0, 0.25))
        proxy_ms = step_ms * (config.image_size / config.timing_size) ** 2
        true = 0.55 + 0.08 * math.log(params / 5e4) + float(rng.normal(0.0, 0.03))
        runs = {}
        for s in range(seeds):
            final = min(0.99, max(0.11, true + float(rng.normal(0.0, 0.01))))
            curve = [
                final * (1 - 0.5 ** (k + 1)) / (1 - 0.5 ** (epochs + 1)) for k in range(epochs)
            ]
            epoch_cpu = [steps_per_epoch * proxy_ms / 1000 for _ in range(epochs)]
            heldout = 0.2 * epoch_cpu[0]
            at_epoch = list(np.cumsum([e + heldout for e in epoch_cpu]) + 1.0)
            runs[str(config.seed + s)] = {
                "status": "ok",
                "failure": "",
                "accuracy": curve,
                "train_loss": [2.3 * (1 - a) for a in curve],
                "test_accuracy": min(1.0, final + float(rng.normal(0.0, 0.005))),
                "epoch_cpu_seconds": epoch_cpu,
                "cpu_at_epoch": [float(t) for t in at_epoch],
                "cpu_seconds": float(at_epoch[-1]) + heldout,
            }
        nets.append(
            {
                "spec": spec.to_string(),
                "hash": spec.hash,
                "params": params,
                "flops": flops,
                "flops_proxy": spec_flops(spec, config.image_size),
                "step_time_ms": step_ms,
                "step_time_proxy_ms": proxy_ms,
                "step_time_passes_ms": {"final": passes(step_ms)},
                "runs": runs,
            }
        )
    reference = load_arch(config.eval_config().reference).replace(
        num_classes=config.space.num_classes
    )
    return {
        "format": TABLE_FORMAT,
        "config": config.to_dict(),
        "seeds": [config.seed + s for s in range(seeds)],
        "timing": {"synthetic": True},
        "reference": {
            "spec": reference.to_string(),
            "params": spec_parameters(reference),
            "flops": spec_flops(reference, config.timing_size),
            "step_time_ms": 50.0,
            "step_time_passes_ms": {"final": passes(50.0)},
        },
        "nets": nets,
        "provenance": {"synthetic": True},
    }
