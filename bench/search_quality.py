"""Search quality: does the training-aware search find better nets than the alternatives?

At an equal trial budget, with several seeds per method, on a search config's own space and data,
up to five searches run through the real ``nas search`` machinery (``nas.search.run_search``, each
in its own study and run directory under ``--out``):

- ``reward-tpe``: the default: the paper's reward ``A * S^w * P^v`` with the measured step time,
  Optuna's TPE (multivariate, grouped);
- ``pareto-nsga2``: accuracy, normalized step time and parameters as three objectives, NSGA-II
  with a generation of a quarter of the budget (``population_size``; at Optuna's default of 50
  a search of fewer trials never leaves its random first generation);
- ``random``: the same reward, random sampling: what a user would do without a search;
- ``flops-tpe``: the same reward and sampler with FLOPs in place of the measured step time
  (``evaluation.reward_cost: flops``): what FLOP-counting NAS tools optimize;
- ``pareto-asha``: ``pareto-nsga2`` (the same population sizing) with early stopping: MO-ASHA
  (:class:`nas.search.schedulers.ParetoASHA`) lets a third of the candidates go on after epoch
  1, 3, ... (by non-dominated rank, an epsilon-net inside a front), so the same trials cost
  fewer epochs.

Early stopping is off for the other four (ASHA would give the reward searches more trials for the
same compute). The seed seeds the sampler and every candidate's training and held-out split, so
within a seed all methods train on the same split.

Then every net any search evaluated, and the reference net, is re-timed in one process, one
Ray task with the config's resources, round-robin (``nas.evaluate.timing.time_round_robin``,
``--rounds`` passes, median of the passes): the methods are compared on one clock, not on the
step times each search measured while its own trials shared the machine.

Reported per method, mean and spread over seeds: the hypervolume over (accuracy, step time on
the common clock, parameters) after every trial, against one reference point for all
(``results.hypervolume.Normalization``, as ``nas report`` draws it: accuracy linear, step time
and parameters on log scales, each mapped to 0 = the best net any search found, 1 = the worst;
reference point 1.1 on every axis; the volume as a fraction of the reference box); the compute
each search spent (epochs trained over all its trials, a stopped trial counting the epochs it
ran, a reused result none; and trial-minutes, Optuna's start to complete, which a loaded machine
stretches) and the hypervolume at the compute every search spent at least (``budget_epochs``);
and the net each search hands its user (its reward-best trial, by the reward the search itself
optimized), judged on the common clock: accuracy, step time, parameters and the paper's reward.
Writes ``search_quality.json``, ``search_quality.md`` (the table) and ``search_quality.png``
(hypervolume against trials and against epochs trained; every net, the chosen ones starred) to
``--out``.

A rerun skips the searches that finished and resumes those that did not, so a method can be
added to an ``--out`` whose other searches finished: run the same command with the new method
among ``--methods`` (all five by default) and ``--retime``; the finished searches are reused and
every net of every search is re-timed together on one clock. Without ``--retime`` the timings
cached in ``retimed.json`` are used when they hold every net, and all nets are re-timed together
when one is missing.

    python bench/search_quality.py configs/quick.yaml
    python bench/search_quality.py configs/quick.yaml --trials 30 --seeds 0,1,2 --out runs/sq
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from nas.cluster import ray_session
from nas.search import SearchConfig, run_search
from nas.search.tasks import TaskFailure, run_tasks
from results import load_study_frame, reward_best
from results.correlation import rank_correlation
from results.hypervolume import Normalization, hypervolume_history

#: The methods compared: name -> changes to the config (``evaluation`` merged into the config's).
METHODS: dict[str, dict[str, Any]] = {
    "reward-tpe": {"objective": "reward", "sampler": "tpe"},
    "pareto-nsga2": {"objective": "pareto", "sampler": "nsga2"},
    "random": {"objective": "reward", "sampler": "random"},
    "flops-tpe": {"objective": "reward", "sampler": "tpe", "evaluation": {"reward_cost": "flops"}},
    "pareto-asha": {"objective": "pareto", "sampler": "nsga2", "early_stopping": True},
}
#: The hypervolume's objectives and which of them are taken on a log scale.
OBJECTIVES = ("accuracy", "step_time_ms", "params")
#: Line styles, so that curves that coincide (NSGA-II's first generation is random sampling
#: with the same seed) stay visible.
STYLES = {"reward-tpe": "-", "pareto-nsga2": (0, (6, 3)), "random": ":", "flops-tpe": "-.",
          "pareto-asha": (0, (2, 1, 2, 3))}  # fmt: skip
MARKERS = {"reward-tpe": "o", "pareto-nsga2": "s", "random": "^", "flops-tpe": "D",
           "pareto-asha": "v"}  # fmt: skip
COLORS = {
    "reward-tpe": "#1f77b4",
    "pareto-nsga2": "#2ca02c",
    "random": "#7f7f7f",
    "flops-tpe": "#d62728",
    "pareto-asha": "#9467bd",
}


def method_config(base: SearchConfig, method: str, seed: int, trials: int, out: Path):
    """The config of one method's search with one seed."""
    changes = dict(METHODS[method])
    if changes.get("sampler") == "nsga2":
        changes["population_size"] = max(2, trials // 4)
    evaluation = {**base.evaluation, **changes.pop("evaluation", {})}
    # Early stopping only where the method names it: it changes what a trial costs.
    changes = {"early_stopping": False, **changes}
    return base.replace(
        study=f"{method}-s{seed}",
        runs_dir=str(out),
        storage=None,
        seed=seed,
        trials=trials,
        evaluation=evaluation,
        **changes,
    )


def finished_trials(config: SearchConfig) -> int | None:
    """Trials of the study that ended (None: no study yet)."""
    import optuna

    if not (config.run_dir / "study.db").is_file():
        return None
    try:
        study = optuna.load_study(study_name=config.study, storage=config.storage_url)
    except KeyError:
        return None
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def run_searches(args: argparse.Namespace, base: SearchConfig) -> list[SearchConfig]:
    """Every method with every seed, seeds outermost (the machine's load drifts over an hour:
    each seed's five searches run back to back). Finished searches are skipped, unfinished
    ones resumed."""
    configs = []
    for seed in args.seeds:
        for method in args.methods:
            config = method_config(base, method, seed, args.trials, args.out)
            configs.append(config)
            done = finished_trials(config)
            if done is not None and done >= args.trials:
                print(f"[{config.study}] finished earlier ({done} trials): skipped", flush=True)
                continue
            started = time.perf_counter()
            run_search(
                config,
                resume=done is not None,
                log=lambda line, study=config.study: print(f"[{study}] {line}", flush=True),
            )
            minutes = (time.perf_counter() - started) / 60
            print(f"[{config.study}] took {minutes:.1f} min", flush=True)
    return configs


def collect(configs: list[SearchConfig]) -> pd.DataFrame:
    """Every trial of every search: method, seed, trial number, state, the record, and
    ``reused`` (the trial reported a stored result of the same spec instead of training)."""
    import optuna

    from nas.search.searcher import REUSED_FROM

    frames = []
    for config in configs:
        frame = load_study_frame(config.storage_url, config.study)
        study = optuna.load_study(study_name=config.study, storage=config.storage_url)
        reused = {t.number for t in study.get_trials(deepcopy=False) if REUSED_FROM in t.user_attrs}
        method, seed = config.study.rsplit("-s", 1)
        frames.append(
            frame.assign(method=method, seed=int(seed), reused=frame["number"].isin(reused))
        )
    return pd.concat(frames, ignore_index=True)


def compute_spent(rows: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """What each trial cost: ``epochs`` trained and ``trial_seconds`` (Optuna's start to
    complete: the trial's wall time on its worker, which a loaded machine stretches).

    A completed trial trained the epochs its record says, a trial stopped early (``PRUNED``)
    the epochs it reached (its last report's; missing, as in a study of an older effnas: the
    search's ``epochs``, so compute is never understated); a trial that reused a stored result
    or failed trained none (a failure may have spent a little: failures are counted apart).
    """
    recorded = pd.to_numeric(rows["epochs"], errors="coerce").fillna(epochs)
    trained = rows["state"].isin(["COMPLETE", "PRUNED"]) & ~rows["reused"].astype(bool)
    wall = pd.to_datetime(rows["datetime_complete"]) - pd.to_datetime(rows["datetime_start"])
    return pd.DataFrame(
        {
            "epochs": recorded.where(trained, 0.0),
            "trial_seconds": wall.dt.total_seconds().fillna(0.0),
        },
        index=rows.index,
    )


def retime_on_worker(specs: list[str], setup: Any, rounds: int, threads: int) -> list[float]:
    """On one Ray worker: each spec's step time on one clock, round-robin; the median over
    ``rounds`` passes of each pass's median step, in ms."""
    import torch

    from nas.evaluate.timing import time_round_robin
    from searchspace import ArchSpec, build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = [build_model(ArchSpec.from_string(spec)) for spec in specs]
    timings = time_round_robin(models, setup, rounds)
    return [statistics.median(t.median_ms for t in per_net) for per_net in timings]


def retime(args: argparse.Namespace, base: SearchConfig, frame: pd.DataFrame) -> dict[str, float]:
    """Step time (ms) on the common clock for every spec in ``frame`` and the reference
    (key: ``"reference"``), cached in ``retimed.json`` by spec string."""
    from nas.evaluate.timing import StepSetup
    from searchspace import load_arch

    path = args.out / "retimed.json"
    cached = {} if args.retime or not path.is_file() else json.loads(path.read_text())
    eval_config = base.eval_config()
    specs = sorted(set(frame.loc[frame["state"] == "COMPLETE", "spec"]))
    reference = load_arch(eval_config.reference).replace(num_classes=base.space.num_classes)
    wanted = [*specs, reference.to_string()]
    if all(spec in cached for spec in wanted):
        print(f"re-timing: all {len(wanted)} nets cached in {path}", flush=True)
    else:
        setup = StepSetup.for_config(eval_config, base.timing_size, base.space.num_classes)
        threads = max(1, int(base.resources.cpus))
        print(
            f"re-timing {len(wanted)} nets (the reference included), {args.rounds} "
            f"round-robin passes on one worker ...",
            flush=True,
        )
        started = time.perf_counter()
        # In the Ray session main() holds.
        (value,) = run_tasks(
            retime_on_worker,
            [(wanted, setup, args.rounds, threads)],
            resources=base.resources,
            concurrent=1,
        )
        if isinstance(value, TaskFailure):
            raise SystemExit(f"re-timing failed: {value.reason}")
        cached = dict(zip(wanted, value, strict=True))
        path.write_text(json.dumps(cached, indent=1) + "\n")
        print(f"re-timing took {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    times = {spec: cached[spec] for spec in specs}
    times["reference"] = cached[reference.to_string()]
    return times


def study_summary(
    rows: pd.DataFrame, normalization: Normalization, times: dict[str, float], base: SearchConfig
) -> dict[str, Any]:
    """One search's hypervolume after each trial and the net it hands its user, on the common
    clock (``rows["step_time_ms"]`` is the re-measured step time).

    Trials count in the order the sampler chose them (trial numbers), not the order they
    finished in: with several at a time the two differ by a swap here and there, and in trial
    order the methods whose first trials are the same draws (see docs/benchmarks.md) share their
    curve up to where they part."""
    rows = rows.sort_values("number")
    complete = rows["state"] == "COMPLETE"
    losses = normalization.normalize(rows)
    history = hypervolume_history(losses, normalization.reference) / math.prod(
        normalization.reference
    )
    spent = compute_spent(rows, base.epochs)
    best = reward_best(rows)
    chosen = None
    if best is not None:
        test = best.get("test_accuracy")
        chosen = {
            "spec": best["spec"],
            "accuracy": float(best["accuracy"]),
            # On images no decision saw; the held-out figure is the best of many noisy ones.
            "test_accuracy": None if pd.isna(test) else float(test),
            "step_time_ms": float(best["step_time_ms"]),
            "params": int(best["params"]),
            "flops": int(best["flops"]),
            "reward": common_reward(best, times, base),
        }
    return {
        "hypervolume": [float(v) for v in history],
        # Compute spent up to and with each trial, in the same order as the hypervolume.
        "epochs": [float(v) for v in spent["epochs"].cumsum()],
        "trial_seconds": [float(v) for v in spent["trial_seconds"].cumsum()],
        "trials": len(rows),
        "failed": int((rows["state"] == "FAIL").sum()),
        "stopped": int((rows["state"] == "PRUNED").sum()),
        "distinct_nets": int(rows.loc[complete, "hash"].nunique()),
        "best": chosen,
    }


def common_reward(row: pd.Series, times: dict[str, float], base: SearchConfig) -> float:
    """The paper's reward with the step time on the common clock (same reference, same w, v)."""
    from nas.evaluate.reward import reward

    step_norm = row["step_time_ms"] / times["reference"]
    return reward(
        float(row["accuracy"]), step_norm, float(row["params_norm"]), base.reward_w, base.reward_v
    )


def analyse(frame: pd.DataFrame, times: dict[str, float], base: SearchConfig) -> dict[str, Any]:
    """Per study and per method (mean and spread over seeds), on one normalized scale, with
    every step time re-measured on the common clock (the searches' own in
    ``step_time_search_ms``)."""
    frame = frame.assign(
        step_time_search_ms=frame["step_time_ms"], step_time_ms=frame["spec"].map(times)
    )
    ok = frame[frame["state"] == "COMPLETE"]
    normalization = Normalization.fit([frame], OBJECTIVES)
    studies = {
        f"{method}-s{seed}": {
            "method": method,
            "seed": int(seed),
            **study_summary(rows, normalization, times, base),
        }
        for (method, seed), rows in frame.groupby(["method", "seed"], sort=False)
    }
    # The compute every search spent at least: each search's hypervolume at that budget
    # compares methods that spend differently per trial (early stopping) at equal compute.
    budget = min(study["epochs"][-1] for study in studies.values())
    for study in studies.values():
        study["hypervolume_at_budget"] = hypervolume_at(study, "epochs", budget)
    methods = {
        method: method_summary([s for s in studies.values() if s["method"] == method])
        for method in dict.fromkeys(frame["method"])
    }
    return {
        "normalization": normalization.describe(),
        "reference_step_time_ms": times["reference"],
        # How far the searches' own step times (taken while trials shared the machine) rank
        # nets as the common clock does.
        "search_vs_common_step_time": _agreement(ok["step_time_search_ms"], ok["step_time_ms"]),
        "budget_epochs": budget,
        "studies": studies,
        "methods": methods,
        "nets": ok[
            [
                "method",
                "seed",
                "number",
                "spec",
                "accuracy",
                "test_accuracy",
                "step_time_ms",
                "step_time_search_ms",
                "params",
                "flops",
            ]
        ].to_dict(orient="records"),
    }


def hypervolume_at(study: dict[str, Any], compute: str, budget: float) -> float:
    """A search's hypervolume once it had spent ``budget`` of ``compute`` (``epochs`` or
    ``trial_seconds``): after its last trial that ended within it (0 before the first)."""
    within = [hv for hv, spent in zip(study["hypervolume"], study[compute], strict=True)
              if spent <= budget]  # fmt: skip
    return within[-1] if within else 0.0


def method_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One method over its seeds (mean and standard deviation): the final hypervolume, the
    hypervolume at the common compute budget, what it spent, and its reward-best nets."""
    finals = [run["hypervolume"][-1] for run in runs]
    bests = [run["best"] for run in runs if run["best"] is not None]
    tested = [b for b in bests if b.get("test_accuracy") is not None]
    return {
        "hypervolume": _mean_sd(finals),
        "hypervolume_per_seed": finals,
        "hypervolume_at_budget": _mean_sd([run["hypervolume_at_budget"] for run in runs]),
        "epochs": _mean_sd([run["epochs"][-1] for run in runs]),
        "trial_seconds": _mean_sd([run["trial_seconds"][-1] for run in runs]),
        **{
            key: _mean_sd([b[key] for b in bests])
            for key in ("accuracy", "step_time_ms", "params", "reward")
        },
        "test_accuracy": _mean_sd([b["test_accuracy"] for b in tested]),
        # Held-out minus test accuracy of the reward-best net, in points: the winner's curse.
        "heldout_minus_test": _mean_sd(
            [100 * (b["accuracy"] - b["test_accuracy"]) for b in tested]
        ),
        "distinct_nets": _mean_sd([run["distinct_nets"] for run in runs]),
        "failed": sum(run["failed"] for run in runs),
        "stopped": sum(run["stopped"] for run in runs),
    }


def _agreement(x: pd.Series, y: pd.Series) -> dict[str, Any]:
    correlation = rank_correlation(list(x), list(y))
    return {**correlation.to_dict(), "tau_text": correlation.tau_text}


def _mean_sd(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": math.nan, "sd": math.nan}
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return {"mean": statistics.fmean(values), "sd": sd}


def _pm(stat: dict[str, float], fmt: str) -> str:
    if math.isnan(stat["mean"]):
        return "-"
    if math.isnan(stat["sd"]):
        return format(stat["mean"], fmt)
    return f"{format(stat['mean'], fmt)} ± {format(stat['sd'], fmt)}"


def table(result: dict[str, Any], trials: int, seeds: list[int]) -> str:
    """The markdown table of docs/benchmarks.md: per method, mean ± sd over seeds."""
    budget = result["budget_epochs"]
    lines = [
        f"| method | hypervolume after {trials} trials | per seed ({', '.join(map(str, seeds))}) "
        f"| epochs trained | trial-minutes | stopped early | hypervolume at {budget:g} epochs "
        "| reward-best net: held-out accuracy | test accuracy | held-out - test (points) "
        "| step time (ms) | parameters | reward | distinct nets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, m in result["methods"].items():
        per_seed = ", ".join(f"{v:.3f}" for v in m["hypervolume_per_seed"])
        minutes = {k: v / 60 for k, v in m["trial_seconds"].items()}
        lines.append(
            f"| {method} | {_pm(m['hypervolume'], '.3f')} | {per_seed} | "
            f"{_pm(m['epochs'], '.0f')} | {_pm(minutes, '.1f')} | {m['stopped']} | "
            f"{_pm(m['hypervolume_at_budget'], '.3f')} | "
            f"{_pm({k: 100 * v for k, v in m['accuracy'].items()}, '.2f')}% | "
            f"{_pm({k: 100 * v for k, v in m['test_accuracy'].items()}, '.2f')}% | "
            f"{_pm(m['heldout_minus_test'], '+.2f')} | "
            f"{_pm(m['step_time_ms'], '.1f')} | {_pm(m['params'], ',.0f')} | "
            f"{_pm(m['reward'], '.4f')} | {_pm(m['distinct_nets'], '.1f')} |"
        )
    return "\n".join(lines)


def figure(result: dict[str, Any], path: Path) -> Path:
    """Hypervolume against trials and against epochs trained (mean over seeds, band from the
    lowest to the highest seed), and every net on the common clock with each search's
    reward-best starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(21, 5.4))
    for method in result["methods"]:
        studies = [s for s in result["studies"].values() if s["method"] == method]
        length = min(len(study["hypervolume"]) for study in studies)
        stacked = np.array([study["hypervolume"][:length] for study in studies])
        _curve(left, method, np.arange(1, length + 1), stacked)
        # Up to the compute every seed of the method spent; a step at each trial's end.
        spent = min(study["epochs"][-1] for study in studies)
        steps = sorted({0.0, *(e for study in studies for e in study["epochs"] if e <= spent)})
        stacked = np.array(
            [[hypervolume_at(study, "epochs", e) for e in steps] for study in studies]
        )
        _curve(middle, method, np.array(steps), stacked, drawstyle="steps-post")
    left.set_xlabel("trials (in the order the sampler chose them)")
    left.xaxis.get_major_locator().set_params(integer=True)
    left.set_title("Hypervolume against trials (line: mean over seeds; band: lowest to highest)")
    middle.set_xlabel("epochs trained, all trials together (a stopped trial: the epochs it ran)")
    middle.axvline(result["budget_epochs"], color="black", linewidth=0.8, linestyle=":")
    middle.set_title("Hypervolume against compute (dotted: the budget every search spent)")
    for axes in (left, middle):
        axes.set_ylabel("hypervolume (fraction of the reference box)")
        axes.grid(alpha=0.3)
        axes.legend()
    _nets(right, result)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _curve(axes, method: str, x: np.ndarray, stacked: np.ndarray, **style: Any) -> None:
    """A method's mean curve over its seeds (rows of ``stacked``), and its band when several."""
    color = COLORS.get(method)
    axes.plot(x, stacked.mean(axis=0), color=color, linestyle=STYLES.get(method, "-"),
              label=method, linewidth=2.2, **style)  # fmt: skip
    if len(stacked) > 1:
        step = {"step": "post"} if style.get("drawstyle") == "steps-post" else {}
        axes.fill_between(
            x, stacked.min(axis=0), stacked.max(axis=0), color=color, alpha=0.15, **step
        )


def _nets(right, result: dict[str, Any]) -> None:
    """Every net on the common clock, each search's reward-best starred."""
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    nets = pd.DataFrame(result["nets"])
    for method in result["methods"]:
        mine = nets[nets["method"] == method]
        # Hollow markers of a shape per method: a net several searches evaluated shows them all.
        right.scatter(
            mine["step_time_ms"],
            mine["accuracy"],
            s=[30, 42, 56, 70, 84][list(result["methods"]).index(method) % 5],
            marker=MARKERS.get(method, "o"),
            facecolors="none",
            edgecolors=COLORS.get(method),
            linewidths=1.0,
            label=method,
        )
        for study in result["studies"].values():
            if study["method"] == method and study["best"] is not None:
                best = study["best"]
                right.scatter(
                    best["step_time_ms"],
                    best["accuracy"],
                    marker="*",
                    s=280,
                    color=COLORS.get(method),
                    edgecolor="black",
                    linewidth=0.8,
                )
    right.set_xscale("log")
    right.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    right.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    right.yaxis.set_major_formatter(PercentFormatter(1.0))
    right.set_xlabel("training step time, ms (re-measured on one clock)")
    right.set_ylabel("held-out accuracy")
    right.set_title("Every net evaluated; stars: each search's reward-best")
    right.grid(alpha=0.3)
    right.legend()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="search config YAML (its dataset, space and proxy)")
    parser.add_argument("--trials", type=int, default=20, help="trials per search (default 20)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}"
    )
    parser.add_argument("--rounds", type=int, default=3, help="re-timing passes (default 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/search-quality"))
    parser.add_argument("--retime", action="store_true", help="re-time even if cached")
    parser.add_argument("--address", help="Ray cluster address (default: Ray on 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    args.methods = [name.strip() for name in args.methods.split(",")]
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    if args.trials < 1 or args.rounds < 1:
        parser.error("--trials and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from searchspace.errors import EffnasError

    args = parse_args(argv)
    try:
        base = SearchConfig.load(args.config)
        for seed in args.seeds:  # every method's config is valid before any search starts
            for method in args.methods:
                method_config(base, method, seed, args.trials, args.out)
    except EffnasError as error:
        print(f"search_quality: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    command = " ".join(["python", "bench/search_quality.py", *(argv or sys.argv[1:])])
    print(f"command: {command}", flush=True)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    # One Ray for every search and the re-timing (each search would otherwise start its own).
    with ray_session(args.address):
        configs = run_searches(args, base)
        frame = collect(configs)
        times = retime(args, base, frame)
    result = analyse(frame, times, base)
    result.update(
        command=command,
        dataset=base.dataset,
        trials=args.trials,
        seeds=args.seeds,
        rounds=args.rounds,
        image_size=base.image_size,
        epochs=base.epochs,
    )
    markdown = table(result, args.trials, args.seeds)
    (args.out / "search_quality.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "search_quality.md").write_text(markdown + "\n")
    png = figure(result, args.out / "search_quality.png")
    agreement = result["search_vs_common_step_time"]
    print(f"\n{markdown}\n\nhypervolume scale: {result['normalization']}")
    print(
        f"the searches' own step times rank the {agreement['n']} nets as the common clock does "
        f"with Kendall's tau {agreement['tau_text']}"
    )
    print(f"wrote {args.out / 'search_quality.json'}, {args.out / 'search_quality.md'}, {png}")
    print(f"took {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
