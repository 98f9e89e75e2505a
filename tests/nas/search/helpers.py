"""What the search tests share: a small space, configs, a stand-in record, and the driver
processes of :mod:`tests.nas.search.barrier_driver` with the checks made after them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import yaml

from nas.search import SearchConfig
from searchspace import ArchSpec, build_model, count_parameters
from tests import REPO

#: How a listening address on the loopback interface starts (IPv4, IPv4-mapped IPv6, IPv6).
LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")

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


#: Lines given to :func:`collect_line`. A search's callbacks are pickled into its Tune experiment
#: and unpickled on a resume; a module-level function is pickled by name, so a resumed search
#: in this process still logs here (a list's ``append`` would log into an unpickled copy).
_COLLECTED: list[str] = []


def collect_line(line: str) -> None:
    """A search's ``log`` that tests read with :func:`collected_lines`."""
    _COLLECTED.append(line)


def collected_lines() -> list[str]:
    """The lines collected so far, and forget them."""
    lines = list(_COLLECTED)
    _COLLECTED.clear()
    return lines


def write_config(tmp_path: Path, **overrides) -> Path:
    data = yaml.safe_load((REPO / "configs" / "quick.yaml").read_text())
    data["runs_dir"] = str(tmp_path / "runs")
    data.update(overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the driver and every Ray process it started (they share its session)."""
    subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
    process.wait(timeout=30)


def study_trials(config: SearchConfig, storage: str | None = None) -> list:
    """The study's trials, read through ``storage`` (default: the config's storage URL)."""
    url = storage or config.storage_url
    return optuna.load_study(study_name=config.study, storage=url).get_trials()


def barrier_driver(
    path: Path, barrier: Path, slots: int, *extra: str, options: Sequence[str] = ()
) -> list[str]:
    """``nas search path ...`` with the stand-in evaluation of
    :mod:`tests.nas.search.barrier_driver` (``slots`` candidates finish, the rest wait;
    ``options``: ``--meet=N``, ``--gate``)."""
    barrier.mkdir(exist_ok=True)
    return [sys.executable, "-m", "tests.nas.search.barrier_driver", str(barrier), str(slots),
            *options, "search", str(path), *extra]  # fmt: skip


def wait_for(condition, seconds: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the driver ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds:.0f} s"
        time.sleep(0.2)


def assert_nothing_lost_or_counted_twice(
    trials: list, finished_before: list, requested: int, output: str = ""
) -> None:
    """After a resume: exactly ``requested`` evaluated trials, every trial ended, and the ones
    that had ended before the driver was killed unchanged. A trial the killed driver had only
    just asked for is failed as "interrupted" and run anew, so it does not count."""
    done = [t for t in trials if t.state.is_finished() and t.user_attrs.get("failure", "") == ""]
    interrupted = [t for t in trials if "interrupted" in t.user_attrs.get("failure", "")]
    summary = [(t.number, t.state.name, t.user_attrs.get("failure")) for t in trials]
    assert len(done) == requested, (summary, output[-3000:])
    assert len(trials) == requested + len(interrupted)
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    for before in finished_before:
        after = next(t for t in trials if t.number == before.number)
        assert after.state == before.state and after.values == before.values
        assert after.user_attrs == before.user_attrs
