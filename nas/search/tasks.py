"""A fixed list of jobs on Ray, each with a search's resources: where no sampler chooses.

A search asks Optuna for each candidate; ``nas fidelity`` and ``bench/search_quality.py`` know
their work up front (evaluate these specs with these settings; re-time these nets). They run it
as plain Ray tasks, one per job, with the resources a search trial gets (so that a step is timed
on a core or a GPU of its own, as in the search) and at most ``concurrent`` at a time. Call
inside :func:`nas.cluster.ray_session`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nas.search.config import Resources

__all__ = ["TaskFailure", "run_tasks"]


@dataclass(frozen=True)
class TaskFailure:
    """What a job whose task Ray could not finish (its worker died, it raised) returns instead.

    Attributes:
        reason: one line: the error's type and message.
    """

    reason: str


def _reason(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error  # a RayTaskError wraps the task's exception
    return " ".join(f"{type(cause).__name__}: {cause}".split())[:500]


def run_tasks(
    function: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    *,
    resources: Resources,
    concurrent: int,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Run ``function(*job)`` for every job as a Ray task, ``concurrent`` at a time.

    Args:
        function: a module-level function (Ray workers import it by name).
        jobs: each job's positional arguments.
        resources: CPUs and GPUs per task (a search config's ``resources``).
        concurrent: at most this many tasks at once (the cluster may hold fewer).
        on_result: called as ``on_result(index, value)`` as each job ends, in the order they end.

    Returns:
        Each job's value, in the order of ``jobs``; a :class:`TaskFailure` for a job whose task
        raised or whose worker died (after Ray's retries).
    """
    import ray

    remote = ray.remote(function).options(
        num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=1
    )
    values: list[Any] = [None] * len(jobs)
    pending: dict[Any, int] = {}
    queue = list(enumerate(jobs))
    queue.reverse()  # pop() from the end takes the jobs in order
    while queue or pending:
        while queue and len(pending) < concurrent:
            index, job = queue.pop()
            pending[remote.remote(*job)] = index
        done, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(done[0])
        try:
            values[index] = ray.get(done[0])
        except ray.exceptions.RayError as error:
            values[index] = TaskFailure(_reason(error))
        if on_result is not None:
            on_result(index, values[index])
    return values
