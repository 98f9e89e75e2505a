"""Proxy fidelity: does the search's brief training rank nets as longer training does?

:func:`run_fidelity` (``nas fidelity``) samples distinct specs from a config's space within its
cheap constraints, evaluates each with the config's proxy (exactly what a search trial runs) and
with a long schedule, as Ray tasks (:mod:`nas.search.tasks`), and rank-correlates
(:mod:`results.correlation`) proxy accuracy and step time with the long run's accuracy and time
per step, FLOPs and parameters as the contrast; :func:`verdict` says what that means in one
sentence. Every evaluation is appended to ``evaluations.jsonl`` as it ends, so a stopped run
resumes where it was. What is compared and how the verdict reads: docs/fidelity.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import ConfigError
from nas.evaluate.config import EvalConfig
from nas.search.config import SearchConfig
from nas.search.tasks import TaskFailure, run_tasks
from results.correlation import RankCorrelation, rank_correlation
from searchspace.checks import check_int
from searchspace.files import atomic_write, make_output_dir
from searchspace.space import SearchSpace
from searchspace.spec import ArchSpec

__all__ = [
    "PAIRS",
    "FidelityPlan",
    "FidelityResult",
    "evaluate_for_fidelity",
    "fidelity_figure",
    "plan_fidelity",
    "run_fidelity",
    "sample_specs",
    "verdict",
]

EVALUATIONS_FILE = "evaluations.jsonl"
#: Draws of the space per spec asked for before :func:`sample_specs` gives up (a space or
#: constraints that leave fewer distinct nets than asked for would draw forever).
MAX_DRAWS_PER_SPEC = 200

#: The rank correlations reported: key -> (x column, y column, what it asks). The first two are
#: the proxy's; the rest are the contrast (what counting instead of measuring would give).
PAIRS: dict[str, tuple[str, str, str]] = {
    "accuracy": ("proxy_accuracy", "long_accuracy", "proxy accuracy ~ long-run accuracy"),
    "step_time": (
        "proxy_step_ms",
        "long_ms_per_step",
        "proxy step time ~ long-run time per step",
    ),
    "flops_time": ("flops", "long_ms_per_step", "FLOPs ~ long-run time per step"),
    "params_time": ("params", "long_ms_per_step", "parameters ~ long-run time per step"),
    "flops_accuracy": ("flops", "long_accuracy", "FLOPs ~ long-run accuracy"),
    "params_accuracy": ("params", "long_accuracy", "parameters ~ long-run accuracy"),
}

#: Verdict thresholds on Kendall's tau of proxy against long-run accuracy: a lower interval
#: bound at TRUST or above means the proxy ranks nets reliably; a point estimate at ROUGH or
#: above, roughly. Rules of thumb (tau 0.5 is 75% of pairs ordered alike), not theorems.
TRUST, ROUGH = 0.5, 0.5
#: Below this many nets a percentile bootstrap interval is too unreliable to trust a proxy on.
MIN_NETS = 8


@dataclass(frozen=True)
class FidelityPlan:
    """What :func:`run_fidelity` evaluates.

    Attributes:
        config: the search config whose proxy is tested.
        specs: the sampled specs.
        long_epochs: the long schedule's epochs.
        long_image_size: the long schedule's image size.
        seed: the seed of the spec sample and of the bootstrap.
        resamples: bootstrap resamples.
    """

    config: SearchConfig
    specs: tuple[ArchSpec, ...]
    long_epochs: int
    long_image_size: int
    seed: int
    resamples: int = 10_000

    @property
    def proxy(self) -> EvalConfig:
        """The proxy: exactly a search trial's evaluation settings."""
        return self.config.eval_config()

    @property
    def long(self) -> EvalConfig:
        """The long schedule: the proxy's settings with more epochs, at the full size."""
        return dataclasses.replace(
            self.proxy, epochs=self.long_epochs, image_size=self.long_image_size
        )

    def describe(self, which: EvalConfig) -> str:
        """``"2 epochs at 32 px"``."""
        epochs = f"{which.epochs} epoch{'s' if which.epochs != 1 else ''}"
        return f"{epochs} at {which.image_size} px"


def sample_specs(
    space: SearchSpace,
    count: int,
    seed: int,
    keep: Callable[[ArchSpec], bool] | None = None,
) -> tuple[ArchSpec, ...]:
    """``count`` distinct specs drawn from ``space`` with ``random.Random(seed)``; with ``keep``,
    only specs it accepts (the nets a search would train: within its cheap constraints).

    Raises:
        ConfigError: the space holds fewer than ``count`` distinct specs, or ``keep`` accepted
            fewer than ``count`` in :data:`MAX_DRAWS_PER_SPEC` draws per spec asked for.
    """
    if count > space.size:
        raise ConfigError(f"--specs {count} is more than the space's {space.size} nets")
    rng = random.Random(seed)
    specs: dict[str, ArchSpec] = {}
    refused: set[str] = set()  # each spec judged once: counting a net's cost takes a moment
    for _ in range(MAX_DRAWS_PER_SPEC * count):
        spec = space.sample(rng)
        if spec.hash in specs or spec.hash in refused:
            continue
        if keep is not None and not keep(spec):
            refused.add(spec.hash)
            continue
        specs[spec.hash] = spec
        if len(specs) == count:
            return tuple(specs.values())
    raise ConfigError(
        f"--specs {count}: only {len(specs)} distinct nets of the space keep within the "
        f"constraints in {MAX_DRAWS_PER_SPEC * count} draws; sample fewer or loosen them"
    )


def plan_fidelity(
    config: SearchConfig,
    *,
    specs: int = 12,
    long_epochs: int | None = None,
    long_image_size: int | None = None,
    seed: int | None = None,
    resamples: int = 10_000,
) -> FidelityPlan:
    """Check the settings and sample the specs; nothing is evaluated yet.

    Args:
        config: the search config.
        specs: how many specs to sample (at least 3).
        long_epochs: the long schedule's epochs; default four times the proxy's.
        long_image_size: its image size; default the space's train resolution (the full size),
            or the proxy's if that is larger.
        seed: seed of the sample and the bootstrap; default the config's.
        resamples: bootstrap resamples (at least 100).

    Raises:
        ConfigError: a bad value, or a long schedule identical to the proxy (it would only
            compare the proxy with itself).
    """
    check_int("--specs", specs, 3, ConfigError)
    check_int("--resamples", resamples, 100, ConfigError)
    seed = config.seed if seed is None else check_int("--seed", seed, 0, ConfigError)
    long_epochs = 4 * config.epochs if long_epochs is None else long_epochs
    check_int("--long-epochs", long_epochs, 1, ConfigError)
    if long_image_size is None:
        long_image_size = max(config.space.train_resolution, config.image_size)
    check_int("--long-image-size", long_image_size, 1, ConfigError)
    stride = 2 * math.prod(stage.stride for stage in config.space.stages)
    if long_image_size < stride:
        raise ConfigError(
            f"--long-image-size must be at least the space's total stride {stride}, "
            f"got {long_image_size}"
        )
    if long_epochs == config.epochs and long_image_size == config.image_size:
        raise ConfigError(
            f"the long schedule ({long_epochs} epochs at {long_image_size} px) is the proxy "
            "itself: give more --long-epochs or a larger --long-image-size"
        )
    # The nets a search would train: none that breaks a cheap constraint.
    config.constraints.check_space(config.space, config.timing_size)
    sample = sample_specs(config.space, specs, seed, keep=_within(config))
    return FidelityPlan(config, sample, long_epochs, long_image_size, seed, resamples)


def _within(config: SearchConfig) -> Callable[[ArchSpec], bool] | None:
    """Whether a spec keeps within the config's cheap constraints (None: it has none)."""
    constraints = config.constraints
    if not constraints.cheap:
        return None

    return lambda spec: not constraints.refuses(spec, config.timing_size)


# -- on a Ray worker ------------------------------------------------------------------------------


def evaluate_for_fidelity(spec: str, config: EvalConfig, threads: int) -> dict[str, Any]:
    """One evaluation, as a search trial runs it, plus the real time per training step.

    The time per step is the training epochs' time over their steps, on the clock the proxy's
    step was timed by: the process's CPU time when the config times by ``cpu`` on a CPU (a
    shared machine: as an idle one's wall clock would read, data loading included), else the
    wall clock.

    Returns:
        ``{"record": the result record, "ms_per_step": time per training step (ms; None if the
        candidate failed), "steps": training steps, "clock": "cpu" or "wall"}``.
    """
    from nas.search.trial import TrialSettings, default_evaluate

    epochs: list[Mapping[str, Any]] = []
    settings = TrialSettings(eval_config=config, threads=threads)
    record = default_evaluate(ArchSpec.from_string(spec), settings, epochs.append)
    # The loader drops the last partial batch, so every step trains exactly batch_size images.
    images = sum(m["images_per_second"] * m["epoch_seconds"] for m in epochs)
    steps = round(images / config.batch_size)
    clock = "cpu" if config.timing_clock == "cpu" and record["device"] == "cpu" else "wall"
    seconds = sum(m["epoch_cpu_seconds" if clock == "cpu" else "epoch_seconds"] for m in epochs)
    ok = record["status"] == "ok" and steps > 0
    ms_per_step = 1000.0 * seconds / steps if ok else None
    return {"record": record, "ms_per_step": ms_per_step, "steps": steps, "clock": clock}


# -- on the driver --------------------------------------------------------------------------------


def _key(spec: ArchSpec, config: EvalConfig) -> str:
    text = json.dumps([spec.hash, dataclasses.asdict(config)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_evaluations(path: Path) -> dict[str, dict[str, Any]]:
    """Evaluations an earlier run left, by key (a line cut short by a crash is skipped)."""
    found: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                found[entry["key"]] = entry["result"]
            except (ValueError, KeyError, TypeError):
                continue
    return found


def _append(path: Path, entry: dict[str, Any]) -> None:
    # The whole file is written again (a few dozen lines): an append cut short by a kill would
    # leave a torn line that the next append runs on into.
    before = path.read_text() if path.is_file() else ""
    if before and not before.endswith("\n"):
        before += "\n"
    atomic_write(path, before + json.dumps(entry) + "\n")


def _as_result(value: Any, spec: ArchSpec) -> dict[str, Any]:
    if isinstance(value, TaskFailure):
        record = {"spec": spec.to_string(), "status": "failed", "failure": value.reason}
        return {"record": record, "ms_per_step": None, "steps": 0}
    return value


def _evaluate_all(
    plan: FidelityPlan, out_dir: Path, address: str | None, log: Callable[[str], None]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every (spec, schedule) evaluation: reused from ``evaluations.jsonl`` or run on Ray."""
    from nas.cluster import ray_session

    path = out_dir / EVALUATIONS_FILE
    done = _read_evaluations(path)
    wanted = [
        (role, spec, config)
        for role, config in (("proxy", plan.proxy), ("long", plan.long))
        for spec in plan.specs
    ]
    results = {
        (role, spec.hash): done[_key(spec, config)]
        for role, spec, config in wanted
        if _key(spec, config) in done
    }
    todo = [job for job in wanted if (job[0], job[1].hash) not in results]
    if results:
        log(f"nas fidelity: reusing {len(results)} evaluations from {path}")
    threads = max(1, int(plan.config.resources.cpus))
    started = time.perf_counter()

    def landed(index: int, value: Any) -> None:
        role, spec, config = todo[index]
        result = _as_result(value, spec)
        results[(role, spec.hash)] = result
        _append(path, {"key": _key(spec, config), "role": role, "result": result})
        log(_progress_line(len(results), len(wanted), role, spec, result, started))

    if todo:
        with ray_session(address):
            run_tasks(
                evaluate_for_fidelity,
                [(spec.to_string(), config, threads) for _, spec, config in todo],
                resources=plan.config.resources,
                concurrent=plan.config.concurrent,
                on_result=landed,
            )
    return results


def _progress_line(
    count: int, total: int, role: str, spec: ArchSpec, result: dict[str, Any], started: float
) -> str:
    record = result["record"]
    if record.get("status") != "ok":
        what = f"FAILED: {record.get('failure', '')}"
    else:
        what = f"accuracy {record['accuracy']:.2%}, step {record['step_time_ms']:.1f} ms"
        if result["ms_per_step"] is not None:
            what += f", {result['ms_per_step']:.1f} ms per training step"
    elapsed = time.perf_counter() - started
    return f"nas fidelity: [{count}/{total}] {role:<5} {spec.hash[:8]}: {what} ({elapsed:.0f} s)"


def _row(spec: ArchSpec, proxy: dict[str, Any], long: dict[str, Any]) -> dict[str, Any]:
    """One spec's figures; a figure is None when its evaluation failed."""
    p, q = proxy["record"], long["record"]
    p_ok, q_ok = p.get("status") == "ok", q.get("status") == "ok"
    failure = "; ".join(r.get("failure", "") for r in (p, q) if r.get("status") != "ok")
    return {
        "spec": spec.to_string(),
        "hash": spec.hash,
        "proxy_accuracy": p["accuracy"] if p_ok else None,
        "long_accuracy": q["accuracy"] if q_ok else None,
        "proxy_step_ms": p.get("step_time_ms") if p_ok else None,
        "long_step_ms": q.get("step_time_ms") if q_ok else None,
        "long_ms_per_step": long["ms_per_step"],
        "long_steps": long["steps"],
        "params": q.get("params") or p.get("params"),
        "flops": q.get("flops"),  # at the long run's (full) image size
        "failure": failure,
    }


@dataclass(frozen=True)
class FidelityResult:
    """What :func:`run_fidelity` found.

    Attributes:
        proxy, long: the two schedules in words (``"2 epochs at 32 px"``).
        dataset: the dataset, and ``heldout_images``: how many images every accuracy is
            measured on (its sampling error is about ``sqrt(a (1 - a) / heldout_images)``).
        rows: one dict per spec (see :func:`_row`), in the order sampled.
        correlations: per key of :data:`PAIRS`, the rank correlation over the specs whose two
            figures are both known.
        verdict: one sentence (:func:`verdict`).
        clock: how the step times were taken (the proxy's clock; the long run's wall time).
    """

    proxy: str
    long: str
    dataset: str
    heldout_images: int
    rows: tuple[dict[str, Any], ...]
    correlations: dict[str, RankCorrelation]
    verdict: str
    clock: str

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["correlations"] = {k: c.to_dict() for k, c in self.correlations.items()}
        data["rows"] = list(self.rows)
        return data


def verdict(
    proxy: str,
    long: str,
    correlations: Mapping[str, RankCorrelation],
    long_accuracies: list[float],
    heldout_images: int,
) -> str:
    """One sentence: how far the proxy can be trusted, and what to try if not.

    Kendall's tau of proxy against long-run accuracy decides (thresholds :data:`TRUST`,
    :data:`ROUGH`); when it is low and the long runs' accuracies spread no wider than the
    held-out split's sampling error, the data cannot tell the nets apart, whatever the proxy.
    """
    acc = correlations["accuracy"]
    if math.isnan(acc.tau):
        return f"Fewer than 3 nets were evaluated with both {proxy} and {long}: nothing to rank."
    found = (
        f"With {proxy}, the proxy ranks {acc.n} nets as {long} do with Kendall's tau {acc.tau_text}"
    )
    mean = statistics.fmean(long_accuracies)
    spread = statistics.pstdev(long_accuracies)
    noise = math.sqrt(max(mean * (1 - mean), 1e-12) / heldout_images)
    if acc.n < MIN_NETS:
        advice = f"too few nets to judge by (fewer than {MIN_NETS}): sample more specs"
    elif not math.isnan(acc.tau_low) and acc.tau_low >= TRUST:
        advice = "trust it for ranking"
    elif acc.tau >= ROUGH:
        advice = "it ranks them roughly, but the interval is wide: sample more specs to be sure"
    elif spread <= noise:
        advice = (
            f"that says little, since the long runs themselves do not tell these nets apart "
            f"(their accuracies spread {100 * spread:.2f} points, the sampling error on "
            f"{heldout_images} held-out images is {100 * noise:.2f}): a harder task or more "
            "held-out images is needed before any proxy can rank them"
        )
    else:
        advice = "too short to trust: try more epochs or a larger image size"
    step = correlations["step_time"]
    timing = ""
    if not math.isnan(step.tau):
        timing = f"; its step time ranks their real time per step with tau {step.tau_text}"
        flops = correlations["flops_time"]
        if not math.isnan(flops.tau):
            timing += f" (FLOPs: {flops.tau:.2f})"
    return f"{found}: {advice}{timing}."


def run_fidelity(
    plan: FidelityPlan,
    out_dir: Path,
    *,
    address: str | None = None,
    log: Callable[[str], None] = print,
) -> FidelityResult:
    """Evaluate the plan's specs with both schedules on Ray and rank-correlate; see the module
    docstring. Writes ``evaluations.jsonl`` into ``out_dir`` (made if missing) as it goes.

    Raises:
        EffnasError: a dataset that cannot be opened, or one whose classes differ from the
            space's (before anything is evaluated).
    """
    from nas.search.driver import check_dataset

    check_dataset(plan.config)
    heldout = len(plan.proxy.load_data(plan.specs[0]).heldout)
    make_output_dir(out_dir, "output folder", ConfigError)
    results = _evaluate_all(plan, out_dir, address, log)
    rows = tuple(
        _row(spec, results[("proxy", spec.hash)], results[("long", spec.hash)])
        for spec in plan.specs
    )
    correlations = {
        key: rank_correlation(
            [row[x] for row in rows],
            [row[y] for row in rows],
            resamples=plan.resamples,
            seed=plan.seed,
        )
        for key, (x, y, _) in PAIRS.items()
    }
    proxy, long = plan.describe(plan.proxy), plan.describe(plan.long)
    accuracies = [row["long_accuracy"] for row in rows if row["long_accuracy"] is not None]
    return FidelityResult(
        proxy=proxy,
        long=long,
        dataset=plan.proxy.dataset,
        heldout_images=heldout,
        rows=rows,
        correlations=correlations,
        verdict=verdict(proxy, long, correlations, accuracies or [0.0], heldout),
        clock=_clocks(plan, results),
    )


def _clocks(plan: FidelityPlan, results: Mapping[tuple[str, str], dict[str, Any]]) -> str:
    """How the two step times were taken, in words."""
    clocks = {r.get("clock", "wall") for (role, _), r in results.items() if role == "long"}
    long = " and ".join(
        {"cpu": "process CPU time", "wall": "wall time"}[clock] for clock in sorted(clocks)
    )
    return (
        f"proxy step: median of {plan.proxy.timing_steps} timed steps ({plan.proxy.timing_clock} "
        f"clock on a CPU, CUDA events on a GPU); long run: its training epochs' {long} over "
        "their steps"
    )


def fidelity_figure(result: FidelityResult, path: Path) -> Path:
    """A PNG of proxy against long-run accuracy, and of the proxy's step time and the FLOPs
    against the long run's real time per step, each panel titled with its tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    panels = (
        ("accuracy", "Accuracy", "proxy accuracy", "long-run accuracy"),
        ("step_time", "Step time", "proxy step time (ms)", "long-run time per step (ms)"),
        ("flops_time", "FLOPs, the contrast", "MFLOPs (full size)", "long-run time per step (ms)"),
    )
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for axis, (key, title, xlabel, ylabel) in zip(axes, panels, strict=True):
        x_name, y_name, _ = PAIRS[key]
        pairs = [
            (row[x_name], row[y_name])
            for row in result.rows
            if row[x_name] is not None and row[y_name] is not None
        ]
        if pairs:
            xs, ys = zip(*pairs, strict=True)
            if key == "flops_time":
                xs = [x / 1e6 for x in xs]
            axis.scatter(xs, ys, color="#1f77b4", edgecolor="black", linewidth=0.5)
            if key == "step_time":  # both in ms: the diagonal is "the proxy's step is the real one"
                ends = [min(*xs, *ys), max(*xs, *ys)]
                axis.plot(ends, ends, color="gray", linestyle="--", linewidth=1, label="y = x")
                axis.legend(loc="upper left")
        if key == "accuracy":
            axis.xaxis.set_major_formatter(PercentFormatter(1.0))
            axis.yaxis.set_major_formatter(PercentFormatter(1.0))
        else:  # costs: log scales, ticks written as plain numbers
            axis.set_xscale("log")
            axis.set_yscale("log")
            for scale in (axis.xaxis, axis.yaxis):
                scale.set_major_formatter(plain)
                scale.set_minor_formatter(plain)
        c = result.correlations[key]
        axis.set_title(f"{title}\ntau {c.tau_text}, rho {c.rho_text}", fontsize=10)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    figure.suptitle(
        f"Proxy fidelity on {result.dataset}: proxy {result.proxy} vs long run {result.long} "
        f"({len(result.rows)} nets, 95% bootstrap intervals)"
    )
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
    return path
