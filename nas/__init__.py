"""effnas's training-aware search, evaluation and training, one sub-package per concept.

- :mod:`nas.data`: datasets by name, splits, loaders; :mod:`nas.train`: the recipe, the step
  loop, full training with progressive learning;
- :mod:`nas.evaluate`: one candidate: time its real training step, train it briefly, score it;
- :mod:`nas.search`: the search itself: Optuna chooses candidates, Ray Tune runs them;
- :mod:`nas.cluster`: where work runs; :mod:`nas.export`: getting a found net out;
- :mod:`nas.cli`: the ``nas`` command; :mod:`nas.errors`: every error these raise.

Architectures come from :mod:`searchspace`, growth rules from :mod:`scaling`, and what a trial
records (and how a study is read) from :mod:`results`.
"""
