"""A live search beside its replay: the check that replaying against the table is faithful.

Runs one real search (``nas.search.run_search``: Ray Tune, real brief training with the table's
proxy, step times measured afresh) with a replay method's config, one trial at a time, its
sampler and its training seeded by ``--seed`` (a seed the table recorded); then replays the same
method, budget and seed against the table, reporting that seed's runs. Prints, and writes to
``--out``/``live-METHOD-bBUDGET-sSEED.json``:

- the nets each asked for, in order, and how many of the first are the same;
- for each net both trained, the live held-out accuracy against the table's run with that seed
  (equal on the recording's machine: brief training is deterministic on a CPU) and the live
  step time against the table's median;
- each search's reward-best net (the one it hands its user), its test accuracy averaged over the
  table's seeds, and their difference against the table's seed spread (the pooled standard
  deviation of a net's test accuracy across seeds): within it, the replay chose as well as the
  live search did.
- the net the live search would have handed out had it scored its nets with the figures the
  replay saw (the table's held-out accuracies and one timing pass, ``seed % passes``): where
  that is the replay's net, the two chose alike, and what remains between them is the step
  times the live search measured afresh (the replay's searcher sees one recorded pass, a live
  one its own measurement).

The live search is the expensive part: ``--rejudge FILE`` judges an earlier result again against
the table as it is now (a table recorded further since: more seeds for the mean test accuracy
and the spread), replaying anew but training nothing; the file is rewritten with the new
judgement and the same live trials.

Every replay method runs live: its config (:func:`nas.search.replay.method_config`) is a search
config.

    python bench/replay_live.py --method tpe --seed 0 --budget 25     # about 15 min on 2 cores
    python bench/replay_live.py --rejudge runs/bench/replay-live/live-tpe-b25-s0.json
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

from nas.search.replay import METHODS, method_config, table_reward
from nas.search.table import Table
from searchspace.errors import EffnasError
from searchspace.files import atomic_write


def pooled_test_spread(table: Table) -> float:
    """The pooled standard deviation of a net's test accuracy across the table's seeds."""
    variances = []
    for net in table.nets:
        values = [
            r.test_accuracy for r in net.runs.values() if r.ok and r.test_accuracy is not None
        ]
        if len(values) > 1:
            variances.append(statistics.variance(values))
    return math.sqrt(statistics.fmean(variances)) if variances else 0.0


def compare(
    table: Table,
    seed: int,
    live: list[dict[str, Any]],
    replayed: list[Any],
    method: str,
    timing_pass: int,
) -> dict:
    """The live search's trials (``number``, ``hash``, ``state``, ``accuracy``, ``reward``,
    ``step_time_ms``) against the replay's (:class:`nas.search.replay.ReplayTrial`) of
    ``method``, which reported the table's ``seed`` and ``timing_pass``. Also the net the live
    search would have handed out had it scored its nets with the figures its replay saw
    (``live_best_on_replay_figures``): where that one is the replay's, the two chose alike and
    differ only by the step times the live search measured."""
    nets = table.by_hash()
    live_hashes = [t["hash"] for t in live]
    replay_hashes = [t.hash for t in replayed]
    same = 0
    for a, b in zip(live_hashes, replay_hashes, strict=False):
        if a != b:
            break
        same += 1
    trained = []
    for trial in live:
        net = nets.get(trial["hash"])
        if net is None or trial["accuracy"] is None or trial["state"] != "COMPLETE":
            continue
        run = net.runs[seed]
        trained.append(
            {
                "hash": trial["hash"],
                "live_accuracy": trial["accuracy"],
                "table_accuracy": run.accuracy[-1],
                "live_step_time_ms": trial["step_time_ms"],
                "table_step_time_ms": net.step_time_ms,
            }
        )
    live_best = max((t for t in live if t["reward"] is not None), key=lambda t: t["reward"])
    replay_best = max((t for t in replayed if t.reward is not None), key=lambda t: t.reward)
    live_acc = nets[live_best["hash"]].test_accuracy
    replay_acc = nets[replay_best.hash].test_accuracy
    spread = pooled_test_spread(table)
    scored = [
        (table_reward(table, METHODS[method], nets[t["hash"]], seed, timing_pass), t["hash"])
        for t in live
        if t["state"] == "COMPLETE" and t["hash"] in nets
    ]
    # The first of equal rewards, in the order asked, as a search's reward-best is chosen.
    on_replay = max((pair for pair in scored if pair[0] is not None), key=lambda pair: pair[0])[1]
    on_replay_acc = nets[on_replay].test_accuracy
    return {
        "live": live_hashes,
        "replay": replay_hashes,
        "same_first": same,
        "trained": trained,
        "live_best": {"hash": live_best["hash"], "spec": nets[live_best["hash"]].spec,
                      "mean_test_accuracy": live_acc},
        "replay_best": {"hash": replay_best.hash, "spec": nets[replay_best.hash].spec,
                        "mean_test_accuracy": replay_acc},
        "best_difference": replay_acc - live_acc,
        "live_best_on_replay_figures": {"hash": on_replay, "spec": nets[on_replay].spec,
                                        "mean_test_accuracy": on_replay_acc},
        "best_difference_on_replay_figures": replay_acc - on_replay_acc,
        "timing_pass": timing_pass,
        "test_seed_spread": spread,
        "within_spread": abs(replay_acc - live_acc) <= spread,
    }  # fmt: skip


def live_trials(config) -> list[dict[str, Any]]:
    """The live study's trials, in the order they were asked for."""
    import optuna

    study = optuna.load_study(study_name=config.study, storage=config.storage_url)
    rows = []
    for trial in sorted(study.get_trials(), key=lambda t: t.number):
        attrs = trial.user_attrs
        rows.append(
            {
                "number": trial.number,
                "hash": attrs.get("hash"),
                "state": trial.state.name,
                "accuracy": attrs.get("accuracy"),
                "reward": attrs.get("reward") if trial.state.name == "COMPLETE" else None,
                "step_time_ms": attrs.get("step_time_ms"),
            }
        )
    return rows


def summary(result: dict[str, Any], budget: int) -> list[str]:
    """The lines the command prints."""
    from scipy.stats import kendalltau

    # Each net once: a re-asked net repeats its first trial's figures.
    trained = list({t["hash"]: t for t in result["trained"]}.values())
    exact = sum(abs(t["live_accuracy"] - t["table_accuracy"]) < 1e-9 for t in trained)
    ratios = [t["live_step_time_ms"] / t["table_step_time_ms"] for t in trained]
    tau = (
        kendalltau([t["live_step_time_ms"] for t in trained],
                   [t["table_step_time_ms"] for t in trained])[0]
        if len(trained) > 1 else math.nan
    )  # fmt: skip
    live, replay = result["live_best"], result["replay_best"]
    lines = [
        f"the same net in the first {result['same_first']} of {budget} trials",
        f"{len(trained)} distinct nets trained live: {exact} with the table's held-out accuracy "
        f"exactly; live step time / table's median: median {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f} - {max(ratios):.2f}), Kendall's tau {tau:.2f}"
        if trained
        else "no net trained live",
        f"reward-best, live:   {live['spec']} ({100 * live['mean_test_accuracy']:.2f}% mean test)",
        f"reward-best, replay: {replay['spec']} ({100 * replay['mean_test_accuracy']:.2f}% mean "
        "test)",
        f"difference {100 * result['best_difference']:+.2f} points, seed spread "
        f"{100 * result['test_seed_spread']:.2f}: "
        + ("within it" if result["within_spread"] else "NOT within it"),
        f"the live search's nets scored with the figures the replay saw (timing pass "
        f"{result['timing_pass']}): reward-best {result['live_best_on_replay_figures']['spec']} "
        f"({100 * result['live_best_on_replay_figures']['mean_test_accuracy']:.2f}% mean test), "
        f"{100 * result['best_difference_on_replay_figures']:+.2f} points from the replay's",
    ]
    if result.get("table_missing_runs"):
        lines.append(
            f"the table lacks {result['table_missing_runs']} runs: the mean test accuracies and "
            "the spread are over the seeds recorded so far (--rejudge once it is whole)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=Path("bench/data/table.json.gz"))
    parser.add_argument("--method", default="tpe", help=f"one of {', '.join(METHODS)}")
    parser.add_argument("--seed", type=int, default=0, help="a seed the table recorded")
    parser.add_argument("--budget", type=int, default=25, help="trials (default 25)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/replay-live"))
    parser.add_argument(
        "--rejudge",
        type=Path,
        metavar="FILE",
        help="judge an earlier result (its JSON) against the table as it is now; trains nothing",
    )
    args = parser.parse_args(argv)
    earlier: dict[str, Any] | None = None
    if args.rejudge is not None:
        try:
            earlier = json.loads(args.rejudge.read_text())
            args.method, args.budget, args.seed = (
                earlier["method"], earlier["budget"], earlier["seed"]
            )  # fmt: skip
            if not isinstance(earlier.get("live_trials"), list):  # written before it kept them
                raise KeyError("live_trials")
        except (OSError, ValueError, KeyError, TypeError) as error:
            parser.error(f"--rejudge {args.rejudge}: not a live check's result ({error})")
    if args.method not in METHODS:
        parser.error(f"--method {args.method!r} is not a replay method ({', '.join(METHODS)})")
    if args.budget < 1:
        parser.error(f"--budget must be at least 1, got {args.budget}")
    try:
        table = Table.read(args.table)
    except EffnasError as error:
        print(f"replay_live: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    if args.seed not in table.seeds:
        parser.error(f"--seed {args.seed} is not a seed of {args.table} ({list(table.seeds)})")
    missing = [m for m in table.missing() if m[1] == args.seed]
    if missing:
        parser.error(f"{args.table} lacks {len(missing)} runs of seed {args.seed}: record them")

    from nas.search import run_search
    from nas.search.replay import replay

    method = METHODS[args.method]
    name = f"live-{args.method}-b{args.budget}-s{args.seed}"
    if earlier is None:
        config = method_config(table, method, budget=args.budget, seed=args.seed, workers=1)
        config = config.replace(study=name, runs_dir=str(args.out))
        print(f"live search {name}: {args.budget} trials, one at a time", flush=True)
        started = time.perf_counter()
        run_search(config)
        live_seconds = time.perf_counter() - started
        live = live_trials(config)
        out = args.out / f"{name}.json"
    else:
        print(f"rejudging {args.rejudge} ({name}) against {args.table}", flush=True)
        live, live_seconds, out = earlier["live_trials"], earlier.get("live_seconds"), args.rejudge
    timing_pass = args.seed % table.timing_passes
    replayed = replay(table, method, budget=args.budget, seed=args.seed, table_seed=args.seed,
                      timing_pass=timing_pass, workers=1)  # fmt: skip
    result = compare(table, args.seed, live, replayed, args.method, timing_pass)
    result.update(method=args.method, budget=args.budget, seed=args.seed,
                  live_seconds=live_seconds, table=str(args.table),
                  table_seeds=list(table.seeds), table_missing_runs=len(table.missing()),
                  live_trials=live)  # fmt: skip
    for line in summary(result, args.budget):
        print(line, flush=True)
    atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
