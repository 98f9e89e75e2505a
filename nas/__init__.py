"""Training-aware search: evaluation of candidates, the Ray Tune + Optuna search, the trainer."""
