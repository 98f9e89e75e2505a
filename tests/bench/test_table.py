"""The recorded table that ships in bench/data: its schema, its coverage of its space, and a few
of its runs reproduced by a fresh evaluation (skipped until the table is wholly recorded)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from nas.search import SearchConfig
from nas.search.table import Table
from tests import REPO

TABLE = REPO / "bench" / "data" / "table.json.gz"
CONFIG = REPO / "configs" / "bench.yaml"


def check_schema_and_coverage(table: Table, config: SearchConfig) -> None:
    """The table records ``config``, every net of its space once, every seed of every net, every
    epoch of every run, and the step times and counts the replay reads."""
    assert table.config.to_dict() == config.to_dict()
    specs = [spec.to_string() for spec in config.space.all_specs()]
    assert [net.spec for net in table.nets] == specs
    assert len({net.hash for net in table.nets}) == len(specs)
    assert table.seeds and table.missing() == []
    assert table.reference["step_time_ms"] > 0 and table.reference["params"] > 0
    assert table.provenance["sessions"][0]["commit"]
    for net in table.nets:
        assert net.params > 0 and net.flops > 0 and net.step_time_ms > 0
        for run in net.runs.values():
            if run.ok:
                assert len(run.accuracy) == len(run.train_loss) == config.epochs
                assert len(run.cpu_at_epoch) == len(run.epoch_cpu_seconds) == config.epochs
                assert run.test_accuracy is not None and run.cpu_seconds >= run.cpu_at_epoch[-1]


def seed_spread(table: Table) -> float:
    """The pooled standard deviation of a net's final held-out accuracy across seeds."""
    variances = [
        statistics.variance([run.accuracy[-1] for run in net.runs.values()])
        for net in table.nets
        if len(net.runs) > 1 and all(run.ok for run in net.runs.values())
    ]
    return math.sqrt(statistics.fmean(variances)) if variances else 0.0


def check_reproduced(table: Table, count: int = 2) -> None:
    """The ``count`` fastest nets, evaluated afresh with the table's first seed as a search trial
    evaluates them, land within two seed spreads of what the table recorded (on the recording's
    machine: exactly)."""
    import torch

    from nas.evaluate import evaluate_candidate
    from nas.search.driver import load_search_data

    torch.set_num_threads(1)
    seed = table.seeds[0]
    config = table.config.replace(seed=seed)
    data = load_search_data(config)
    tolerance = 2 * seed_spread(table) + 1e-9
    fastest = sorted(table.nets, key=lambda net: net.step_time_ms)[:count]
    for net in fastest:
        record = evaluate_candidate(net.spec, config.eval_config(), data=data)
        run = net.runs[seed]
        assert record.accuracy == pytest.approx(run.accuracy[-1], abs=tolerance), net.spec
        assert record.test_accuracy == pytest.approx(run.test_accuracy, abs=tolerance), net.spec


def _recorded() -> Table:
    """The shipped table; skips while it is not recorded, or only partly (a recording takes
    several sessions: the file is committed as it grows, and ``bench/replay.py`` refuses it
    until it is whole)."""
    if not Path(TABLE).exists():
        pytest.skip(f"{TABLE.relative_to(REPO)} is not recorded yet (bench/record_table.py)")
    table = Table.read(TABLE)
    missing = table.missing()
    if missing:
        pytest.skip(
            f"{TABLE.relative_to(REPO)} is being recorded: {len(missing)} runs to go "
            "(bench/record_table.py resumes it)"
        )
    return table


def test_the_shipped_table_covers_its_space():
    check_schema_and_coverage(_recorded(), SearchConfig.load(CONFIG))


@pytest.mark.slow
def test_a_few_runs_of_the_shipped_table_are_reproduced():
    check_reproduced(_recorded())
