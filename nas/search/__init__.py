"""The training-aware search: Ray Tune runs the trials, Optuna chooses and stores them.

- :mod:`nas.search.config`: :class:`SearchConfig`, one validated YAML file (torch- and Ray-free);
- :mod:`nas.search.study`: the Optuna study a search owns, created once and never mixed;
- :mod:`nas.search.searcher`: :class:`StudySearcher`, Tune's searcher over the study;
- :mod:`nas.search.trial`: what one trial runs on a Ray worker;
- :mod:`nas.search.progress`: one line per finished trial;
- :mod:`nas.search.driver`: :func:`run_search`, which ties them together and resumes;
- :mod:`nas.search.tasks`: a fixed list of jobs as Ray tasks with a search's resources;
- :mod:`nas.search.fidelity`: ``nas fidelity``: does the search's proxy rank nets as longer
  training does?

This package runs and records candidates; it must not define how one is evaluated
(``nas.evaluate``) or how a study is read and shown (``results``).
"""

from __future__ import annotations

from nas.search.config import SAMPLERS, Resources, SearchConfig
from searchspace.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "SearchResult": "nas.search.driver",
        "run_search": "nas.search.driver",
    },
)

__all__ = ["SAMPLERS", "Resources", "SearchConfig", "SearchResult", "run_search"]
