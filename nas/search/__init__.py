"""The training-aware search: Ray Tune runs the trials, Optuna chooses and stores them.

- :mod:`nas.search.config`: :class:`SearchConfig`, one validated YAML file (torch- and Ray-free);
- :mod:`nas.search.study`: the study a search owns; :mod:`nas.search.searcher`: Tune's searcher
  over it (:class:`~nas.search.searcher.StudySearcher`); :mod:`nas.search.trial`: one trial;
- :mod:`nas.search.driver`: :func:`run_search`, which ties them together and resumes;
  :mod:`nas.search.progress`: one line per finished trial;
- :mod:`nas.search.tasks`: a fixed list of jobs as Ray tasks; :mod:`nas.search.fidelity`:
  ``nas fidelity``, does the proxy rank nets as longer training does?

It runs and records candidates; evaluating one is ``nas.evaluate``'s, reading a study ``results``'.
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
