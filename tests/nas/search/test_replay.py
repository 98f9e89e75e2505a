"""Replaying searches against a recorded table: the real searcher and schedulers, the clock."""

from __future__ import annotations

import copy
import itertools
import statistics
import sys

import optuna
import pytest
from ray import cloudpickle as ray_cloudpickle

from nas.errors import ConfigError
from nas.evaluate.reward import reward
from nas.search import run_search
from nas.search.replay import (
    METHODS,
    flops_exponent,
    method_config,
    prefix,
    replay,
    table_reward,
)
from nas.search.table import Run, Table, synthetic_table_data
from nas.search.trial import TrialSettings
from searchspace import ArchSpec
from tests.nas.search.helpers import small_config

# Ray workers unpickle the table-reading evaluator below; this module is not importable there.
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: (2 blocks x 2 depths) x (3 depths x 2 kernels x 2 expansions) = 48 nets: enough that TPE's
#: choices after its start-up are its own.
SPACE = {
    "stem_channels": 8,
    "head_channels": 32,
    "num_classes": 10,
    "train_resolution": 32,
    "eval_resolution": 32,
    "stages": [
        {"out_channels": 8, "stride": 1, "repeats": [1, 2], "blocks": ["fused", "mbconv"],
         "kernels": [3], "expand_ratios": [1], "se_ratios": [0.0]},
        {"out_channels": 16, "stride": 2, "repeats": [1, 3], "blocks": ["mbconv"],
         "kernels": [3, 5], "expand_ratios": [1, 4], "se_ratios": [0.0]},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Table:
    """A made-up but consistent table of the 48 nets, 3 epochs, 2 seeds."""
    config = small_config(
        tmp_path_factory.mktemp("table"), space=SPACE, epochs=3, image_size=16, trials=14
    )
    return Table.from_dict(synthetic_table_data(config, seeds=2, seed=1))


def test_the_table_lists_every_net_of_its_space_with_every_seed(table):
    assert {net.spec for net in table.nets} == {
        spec.to_string() for spec in table.config.space.all_specs()
    }
    assert len(table.nets) == 48 and table.missing() == []
    assert all(len(net.runs[0].accuracy) == table.epochs for net in table.nets)


# -- the replay drives the real searcher and schedulers: a live search makes the same choices ---

#: What the live search's stand-in evaluation looks up (set before the search; Ray workers get
#: it with the pickled function).
_LIVE: dict = {}


def table_evaluate(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    """A search trial that trains nothing: the table's run of ``spec`` with the live seed,
    reported epoch by epoch when the search asks for it, scored as a trial scores it."""
    table, seed = _LIVE["table"], _LIVE["seed"]
    net = table.by_hash()[spec.hash]
    run = net.runs[seed]
    config = settings.eval_config
    # The search measures each net once: here, the timing pass its replay reports.
    step_ms = net.step_time_of_pass(_LIVE["pass"])
    figures = {
        "step_time_ms": step_ms,
        "step_time_norm": step_ms / table.reference_step_time(_LIVE["pass"]),
        "params": net.params,
        "params_norm": net.params / table.reference["params"],
        "flops": net.flops,
    }

    def score(accuracy: float) -> float:
        cost = figures["step_time_norm"]
        return reward(accuracy, cost, figures["params_norm"], config.reward_w, config.reward_v)

    if settings.per_epoch:
        for epoch, accuracy in enumerate(run.accuracy, start=1):
            report({**figures, "accuracy": accuracy, "reward": score(accuracy), "epochs": epoch})
    return {
        **figures,
        "spec": spec.to_string(),
        "hash": spec.hash,
        "accuracy": run.accuracy[-1],
        "test_accuracy": run.test_accuracy,
        "reward": score(run.accuracy[-1]),
        "status": "ok",
        "failure": "",
    }


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tpe", "gp", "asha", "pareto-asha"])
@pytest.mark.usefixtures("module_ray")  # one Ray for the module's searches
def test_a_replay_chooses_what_a_live_search_chooses(table, tmp_path, method):
    """The same method, sampler seed and table seed: a live search (Ray Tune, one trial at a
    time, each trial looking its figures up in the table) and its replay ask for the same nets
    in the same order, and the scheduler stops the same ones."""
    seed, budget = 1, 14
    config = method_config(table, METHODS[method], budget=budget, seed=seed, workers=1)
    config = config.replace(runs_dir=str(tmp_path / "runs"), dataset="synthetic:100")
    _LIVE.update(table=table, seed=seed, **{"pass": seed % table.timing_passes})
    run_search(config, evaluate=table_evaluate, log=lambda line: None)
    live = optuna.load_study(study_name=config.study, storage=config.storage_url).get_trials()
    # Both draw the method config's random start-up trials (2 of the 14), then model.
    replayed = replay(table, METHODS[method], budget=budget, seed=seed, workers=1)
    states = {"complete": "COMPLETE", "reused": "COMPLETE", "stopped": "PRUNED"}
    assert [(t.number, t.user_attrs["hash"], t.state.name) for t in live] == [
        (t.number, t.hash, states[t.state]) for t in replayed
    ]
    assert [t.user_attrs.get("reward") for t in live if t.state.name == "COMPLETE"] == [
        pytest.approx(t.reward) for t in replayed if t.state in ("complete", "reused")
    ]
    if METHODS[method].early_stopping:
        assert any(t.state == "stopped" for t in replayed)  # the scheduler had its say


def test_a_replay_is_reproducible_and_its_seed_moves_it(table):
    first = replay(table, METHODS["tpe"], budget=20, seed=3)
    assert [t.to_dict() for t in first] == [
        t.to_dict() for t in replay(table, METHODS["tpe"], budget=20, seed=3)
    ]
    other = replay(table, METHODS["tpe"], budget=20, seed=4)
    assert [t.hash for t in first] != [t.hash for t in other]


# -- the simulated clock -------------------------------------------------------------------------


def _run_of(table: Table, trial) -> Run:
    return table.by_hash()[trial.hash].runs[table.seeds[3 % len(table.seeds)]]


@pytest.mark.parametrize("method", ["asha", "pareto-asha"])
def test_a_stopped_trial_costs_only_the_epochs_it_ran(table, method):
    trials = replay(table, METHODS[method], budget=24, seed=3, workers=1)
    stopped = [t for t in trials if t.state == "stopped"]
    assert stopped and any(t.state == "complete" for t in trials)
    for trial in trials:
        run = _run_of(table, trial)
        if trial.state == "stopped":
            assert 1 <= trial.epochs <= table.epochs
            # Up to its last report: the epochs it ran, the held-out passes after them.
            assert trial.end - trial.start == pytest.approx(run.cpu_at_epoch[trial.epochs - 1])
            assert trial.end - trial.start < run.cpu_seconds
        elif trial.state == "complete":
            assert trial.end - trial.start == pytest.approx(run.cpu_seconds)
        else:
            assert trial.state == "reused" and trial.end == trial.start
    # One worker: each trial starts when the one before it ends.
    for before, after in itertools.pairwise(trials):
        assert after.start == pytest.approx(before.end)


def test_without_a_scheduler_a_trial_skips_the_heldout_passes_before_its_last_epoch(table):
    trials = replay(table, METHODS["random"], budget=12, seed=3, workers=2)
    for trial in trials:
        if trial.state == "complete":
            run = _run_of(table, trial)
            skipped = (table.epochs - 1) * run.heldout_cpu_seconds
            assert run.heldout_cpu_seconds > 0
            assert trial.end - trial.start == pytest.approx(run.cpu_seconds - skipped)
    # Two workers: never more than two trials at once, and the second starts at 0.
    assert trials[0].start == trials[1].start == 0.0
    for trial in trials:
        running = [t for t in trials if t.start <= trial.start < t.end]
        assert len(running) <= 2


def test_report_times_follow_the_recorded_cpu_seconds():
    run = Run(
        status="ok",
        accuracy=(0.3, 0.5, 0.6),
        train_loss=(2.0, 1.5, 1.2),
        test_accuracy=0.58,
        cpu_seconds=40.0,
        cpu_at_epoch=(12.0, 24.0, 36.0),  # 2 s of setup, 8 s of training, 2 s held-out each
        epoch_cpu_seconds=(8.0, 10.0, 10.0),
    )
    assert run.heldout_cpu_seconds == 2.0
    assert run.report_times(per_epoch=True) == ([12.0, 24.0, 36.0], 40.0)
    assert run.report_times(per_epoch=False) == ([], 36.0)


def test_the_searcher_sees_one_timing_pass_the_seed_chooses(table):
    """A live search times each net once: a replay's trials report one timing pass's step
    times (the net's and the reference's), pass ``seed % passes``, not their medians."""
    assert table.timing_passes == 3
    nets = table.by_hash()
    for net in table.nets:
        assert net.step_time_ms == pytest.approx(statistics.median(net.step_time_passes_ms))
    method = METHODS["random"]
    trials = replay(table, method, budget=6, seed=4, workers=1)  # table seed 0, pass 1
    moved = 0
    for trial in trials:
        net = nets[trial.hash]
        assert trial.reward == pytest.approx(table_reward(table, method, net, 0, timing_pass=1))
        moved += trial.reward != pytest.approx(table_reward(table, method, net, 0))
    assert moved  # the medians would have scored them otherwise


def test_a_table_whose_nets_and_reference_were_timed_apart_is_refused(table):
    data = synthetic_table_data(table.config, seeds=1)
    data["nets"][3]["step_time_passes_ms"]["final"].pop()
    with pytest.raises(ConfigError, match="has 2 timing passes, the reference 3"):
        Table.from_dict(data)


def test_a_budget_is_the_first_trials_of_a_larger_one_without_a_scheduler(table):
    for name in ("tpe", "random", "mo-tpe"):
        large = replay(table, METHODS[name], budget=20, seed=5, startup=4)
        small = replay(table, METHODS[name], budget=12, seed=5, startup=4)
        assert [t.to_dict() for t in prefix(large, 12)] == [t.to_dict() for t in small]


def test_start_up_is_a_fifth_of_the_budget_except_for_optunas_fixed_ten(table):
    """TPE models after a fifth of the budget; ``tpe-startup10`` after Optuna's 10 whatever
    the budget, its first 10 trials random search's (the same seed draws the same nets)."""
    for budget, rule in ((12, 2), (25, 5), (50, 10), (100, 10)):
        tpe, fixed = (
            method_config(table, METHODS[name], budget=budget, seed=0, workers=2)
            for name in ("tpe", "tpe-startup10")
        )
        assert (tpe.startup_trials, fixed.startup_trials) == (rule, 10)
    fixed = replay(table, METHODS["tpe-startup10"], budget=12, seed=3, workers=1)
    random = replay(table, METHODS["random"], budget=12, seed=3, workers=1)
    modelled = replay(table, METHODS["tpe"], budget=12, seed=3, workers=1)
    assert [t.hash for t in fixed[:10]] == [t.hash for t in random[:10]]
    assert [t.hash for t in modelled[:2]] == [t.hash for t in random[:2]]
    assert [t.hash for t in modelled] != [t.hash for t in random]


# -- the FLOPs-guided reward -------------------------------------------------------------------


def test_the_flops_exponent_is_the_step_time_exponent_times_the_tables_slope(table):
    data = copy.deepcopy(synthetic_table_data(table.config, seeds=1))
    for net in data["nets"]:
        net["step_time_ms"] = 3.0 * net["flops"] ** 0.4  # step time = 3 F^0.4 exactly
    exponent = flops_exponent(Table.from_dict(data))
    assert exponent == pytest.approx(0.4 * table.config.reward_w)
    config = method_config(table, METHODS["flops-tpe"], budget=10, seed=0, workers=2)
    assert config.eval_config().reward_cost == "flops"
    assert config.reward_w == pytest.approx(flops_exponent(table))


# -- a recording that spans machines ------------------------------------------------------------


def _two_machine_data(table, speed: float) -> dict:
    """The table's data with seed 0 trained on machine ``a`` and seed 1 on machine ``b``,
    which spent ``speed`` times the CPU seconds."""
    data = copy.deepcopy(synthetic_table_data(table.config, seeds=2, seed=1))
    data["provenance"] = {"sessions": [{"boot_id": "a"}, {"boot_id": "b"}, {"boot_id": "a"}]}
    for index, net in enumerate(data["nets"]):
        for seed, run in net["runs"].items():
            # Machine a's runs over two of its sessions; one run more on a than on b.
            run["session"] = (2 if index % 2 else 0) if seed == "0" else 1
            if seed == "1":
                run["cpu_seconds"] *= speed
                for key in ("cpu_at_epoch", "epoch_cpu_seconds"):
                    run[key] = [v * speed for v in run[key]]
    data["nets"][0]["runs"]["1"]["session"] = 0  # a trained 49 nets' seed 0 and one seed 1
    return data


def test_cpu_seconds_recorded_on_another_machine_are_brought_to_one_speed(table):
    """A net trained on a machine that takes 0.7 of the time: its runs' clock is scaled by
    1/0.7 to the machine that trained most runs, whatever the sessions; a replay's trials end
    when they would have on that machine."""
    data = _two_machine_data(table, 0.7)
    data["nets"][0]["runs"]["1"]["cpu_seconds"] /= 0.7  # trained on a: a's speed
    data["nets"][0]["runs"]["1"]["cpu_at_epoch"] = [
        v / 0.7 for v in data["nets"][0]["runs"]["1"]["cpu_at_epoch"]
    ]
    two = Table.from_dict(data)
    assert two.clock_scales[0] == two.clock_scales[2] == pytest.approx(1.0)
    assert two.clock_scales[1] == pytest.approx(1 / 0.7)
    # The replay of seed 1 on the scaled table ends as the same replay on the unscaled one.
    same = Table.from_dict(synthetic_table_data(table.config, seeds=2, seed=1))
    scaled = replay(two, METHODS["random"], budget=8, seed=1, workers=2)
    plain = replay(same, METHODS["random"], budget=8, seed=1, workers=2)
    assert [t.hash for t in scaled] == [t.hash for t in plain]
    assert [t.end for t in scaled] == pytest.approx([t.end for t in plain])


def test_a_machine_that_shares_no_net_with_the_others_keeps_its_seconds(table):
    """Machine b trained only nets that machine a never trained: nothing compares them."""
    data = _two_machine_data(table, 0.5)
    for index, net in enumerate(data["nets"]):
        for run in net["runs"].values():
            run["session"] = 0 if index < 30 else 1
    assert Table.from_dict(data).clock_scales == {0: 1.0, 1: 1.0, 2: 1.0}
    del data["provenance"]
    for net in data["nets"]:
        for run in net["runs"].values():
            del run["session"]  # a table recorded before sessions were noted: no scaling
    plain = Table.from_dict(data)
    assert all(plain.clock_scale(r) == 1.0 for n in plain.nets for r in n.runs.values())
