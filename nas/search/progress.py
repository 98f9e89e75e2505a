"""Progress of a search: one line per finished trial (:class:`TrialLogger`), readable in
``ray job logs``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune import Callback

from nas.search.constraints import Constraints
from nas.search.searcher import REUSED_FROM

__all__ = ["TrialLogger", "format_line"]


class TrialLogger(Callback):
    """A Tune callback that logs one line per finished trial.

    Args:
        total: the trials the search will run.
        log: where the lines go.
        constraints: the search's; a trial that broke a measured one says so on its line.
    """

    def __init__(
        self, total: int, log: Callable[[str], None], constraints: Constraints | None = None
    ) -> None:
        self.total = total
        self.log = log
        self.constraints = constraints or Constraints()

    @staticmethod
    def _done(trials: list, trial: Any) -> int:
        # Counted from Tune's own trial list, so the count is right after a resume too.
        others = (t for t in trials if t is not trial)
        return sum(t.status in ("TERMINATED", "ERROR") for t in others) + 1

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        line = format_line(self._done(trials, trial), self.total, result)
        if result.get("status") != "failed":
            broken = self.constraints.explain(result, self.constraints.of_result(result))
            line += f"  INFEASIBLE: {broken}" if broken else ""
        self.log(line)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = trial.config.get("spec", "?")
        done = self._done(trials, trial)
        self.log(f"[{done}/{self.total}] {spec}  FAILED: worker error (see Tune's log)")


def format_line(done: int, total: int, result: Mapping[str, Any]) -> str:
    """The line for the ``done``-th finished trial of ``total``, from its last result."""
    spec = result.get("spec", "?")
    if result.get("status") == "failed":
        return f"[{done}/{total}] {spec}  FAILED: {result.get('failure', '')}"
    if not result.get("final"):
        return f"[{done}/{total}] {spec}  stopped early at accuracy {result.get('accuracy', 0):.4f}"
    reused = f"  (reused trial {result[REUSED_FROM]})" if REUSED_FROM in result else ""
    return (
        f"[{done}/{total}] {spec}  acc {result.get('accuracy', math.nan):.4f}"
        f"  step {result.get('step_time_ms', math.nan):.1f} ms"
        f"  params {result.get('params', 0) / 1e6:.2f}M"
        f"  reward {result.get('reward', math.nan):.4f}{reused}"
    )
