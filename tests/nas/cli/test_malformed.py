"""A corpus of malformed search configs and training arguments.

Each one gets one line on stderr that names the key and the value, exit status 2, no traceback,
and leaves the file system as it was: no study, run directory or file created or changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from nas.cli import main
from tests import REPO

QUICK = yaml.safe_load((REPO / "configs" / "quick.yaml").read_text())


def _set(path: str, value):
    """A change to the quick config: ``path`` is dotted (``space.stages``, ``resources.gpus``)."""

    def change(data: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data.setdefault(key, {})
        data[last] = value

    return change


# (change to configs/quick.yaml, words the one line must hold: the key and the value)
SEARCH_CONFIGS = {
    "unknown key": (_set("trails", 3), ["trails"]),
    "misspelled space key": (_set("space.stem_channel", 16), ["space.stem_channel"]),
    "unknown resources key": (_set("resources.gpu", 1), ["resources.gpu"]),
    "unknown evaluation key": (_set("evaluation.learning_rate", 0.1), ["learning_rate"]),
    "evaluation key of the top level": (_set("evaluation.epochs", 5), ["evaluation.epochs"]),
    "trials a word": (_set("trials", "many"), ["trials", "'many'"]),
    "trials zero": (_set("trials", 0), ["trials", "0"]),
    "negative concurrency": (_set("concurrent", -1), ["concurrent", "-1"]),
    "zero epochs": (_set("epochs", 0), ["epochs", "0"]),
    "fractional batch size": (_set("batch_size", 1.5), ["batch_size", "1.5"]),
    "image size below the stride": (_set("image_size", 4), ["image_size", "4"]),
    "timing size below the stride": (_set("timing_image_size", 8), ["timing_image_size", "8"]),
    "timing size a word": (_set("timing_image_size", "full"), ["timing_image_size", "'full'"]),
    "timing size in evaluation": (
        _set("evaluation.timing_image_size", 36),
        ["evaluation.timing_image_size"],
    ),
    "no images left to train on": (
        _set("evaluation.test_fraction", 0.95),
        ["test_fraction", "0.95"],
    ),
    "unknown objective": (_set("objective", "best"), ["objective", "'best'"]),
    "unknown sampler": (_set("sampler", "cmaes"), ["sampler", "'cmaes'"]),
    "a population of one": (_set("population_size", 1), ["population_size", "1"]),
    "no start-up trials": (_set("startup_trials", 0), ["startup_trials", "0"]),
    "early stopping a word": (_set("early_stopping", "yes"), ["early_stopping", "'yes'"]),
    "half a GPU": (_set("resources.gpus", 0.5), ["resources.gpus", "0.5"]),
    "negative CPUs": (_set("resources.cpus", -1), ["resources.cpus", "-1"]),
    "positive reward exponent": (_set("reward_w", 0.1), ["reward_w", "0.1"]),
    "negative learning rate": (_set("evaluation.lr", -1), ["lr", "-1"]),
    "unknown optimizer": (_set("evaluation.optimizer", "adam"), ["optimizer", "'adam'"]),
    "unknown clock": (_set("evaluation.timing_clock", "sundial"), ["timing_clock", "sundial"]),
    "unknown reward cost": (_set("evaluation.reward_cost", "watts"), ["reward_cost", "watts"]),
    "held-out fraction above 1": (
        _set("evaluation.heldout_fraction", 1.5),
        ["heldout_fraction", "1.5"],
    ),
    "empty space": (_set("space.stages", []), ["space.stages", "empty"]),
    "repeats low above high": (
        _set("space.stages", [{"out_channels": 16, "stride": 1, "repeats": [3, 1]}]),
        ["space.stages[0].repeats", "[3, 1]"],
    ),
    "a space with no valid net (even kernels)": (_set("space.kernels", [4]), ["kernel", "4"]),
    "no expansion to choose": (_set("space.expand_ratios", []), ["expand_ratios", "non-empty"]),
    "unknown dataset": (_set("dataset", "imagenet-please"), ["dataset", "imagenet-please"]),
    "classes that differ from the dataset's": (
        _set("space.num_classes", 7),
        ["space.num_classes", "7", "10 classes"],
    ),
    "storage with a bad scheme": (_set("storage", "nosuchdb://x/y"), ["nosuchdb://x/y"]),
    "storage that is not a URL": (_set("storage", "study.db"), ["storage", "'study.db'"]),
    "study name a file system refuses": (_set("study", "a/b"), ["study", "'a/b'"]),
    "study name with spaces": (_set("study", "my study"), ["study", "'my study'"]),
    "kernel no real convnet has": (_set("space.kernels", [99]), ["kernel", "99"]),
    "unknown constraint": (_set("constraints.max_param", 5), ["constraints.max_param"]),
    "constraint a word": (_set("constraints.max_flops", "lots"), ["max_flops", "'lots'"]),
    "accuracy floor above 1": (_set("constraints.min_accuracy", 2), ["min_accuracy", "2"]),
    "negative step time bound": (
        _set("constraints.max_step_time_ms", -5),
        ["constraints.max_step_time_ms", "-5"],
    ),
    "constraints a list": (_set("constraints", ["max_params"]), ["constraints", "mapping"]),
    "peak memory bound on CPUs": (
        _set("constraints.max_peak_memory_mb", 100),
        ["max_peak_memory_mb", "GPU"],
    ),
    "every net of the space above max_params": (
        _set("constraints.max_params", "1k"),
        ["constraints.max_params", "1.00k", "smallest net", "25.43k"],
    ),
    "a million channels": (
        _set("space.stages", [{"out_channels": 1_000_000, "stride": 1, "repeats": 1}]),
        ["out_channels", "1000000"],
    ),
}

RAW_CONFIGS = {
    "duplicate key": ("trials: 3\ntrials: 4\n", ["duplicate key", "trials"]),
    "a list, not a mapping": ("- 1\n- 2\n", ["mapping"]),
    "invalid YAML": ("trials: [1, 2\n", ["invalid YAML"]),
}


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _one_line(capsys, argv: list[str], root: Path, words: list[str]) -> None:
    before = _snapshot(root)
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors end the process (one line, status 2)
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    assert _snapshot(root) == before  # nothing created or changed


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "cache"))
    return tmp_path


#: The commands that read a search config; ``nas fidelity`` never opens the study's storage.
CONFIG_COMMANDS = [
    ("search", list(SEARCH_CONFIGS)),
    ("fidelity", [case for case in SEARCH_CONFIGS if "storage" not in case]),
]


@pytest.mark.parametrize(
    ("command", "case"), [(command, case) for command, cases in CONFIG_COMMANDS for case in cases]
)
def test_malformed_search_config(command, case, workdir, capsys):
    change, words = SEARCH_CONFIGS[case]
    data = yaml.safe_load(yaml.safe_dump(QUICK))
    data["runs_dir"] = str(workdir / "runs")
    change(data)
    path = workdir / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    _one_line(capsys, [command, str(path)], workdir, words)
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("command", [command for command, _ in CONFIG_COMMANDS])
@pytest.mark.parametrize("case", list(RAW_CONFIGS))
def test_malformed_search_yaml(command, case, workdir, capsys):
    text, words = RAW_CONFIGS[case]
    path = workdir / "search.yaml"
    path.write_text(text)
    _one_line(capsys, [command, str(path)], workdir, words)


def test_a_dataset_path_that_is_a_file(workdir, capsys):
    data = yaml.safe_load(yaml.safe_dump(QUICK))
    (workdir / "images.txt").write_text("not a folder")
    data.update(dataset=f"imagefolder:{workdir / 'images.txt'}", runs_dir=str(workdir / "runs"))
    path = workdir / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    _one_line(capsys, ["search", str(path)], workdir, ["images.txt", "not a directory"])


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--trials", "0"], ["trials", "0"]),
        (["--concurrent", "-2"], ["concurrent", "-2"]),
        (["--study", "bad name!"], ["study", "'bad name!'"]),
        (["--trials", "three"], ["--trials", "'three'"]),
    ],
)
def test_malformed_search_flags(flags, words, workdir, capsys):
    data = {**QUICK, "runs_dir": str(workdir / "runs")}
    path = workdir / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    _one_line(capsys, ["search", str(path), *flags], workdir, words)


TRAIN_ARGS = {
    "zero epochs": (["--epochs", "0"], ["epochs", "0"]),
    "zero batch": (["--batch-size", "0"], ["batch_size", "0"]),
    "negative learning rate": (["--lr", "-1"], ["lr", "-1"]),
    "unknown optimizer": (["--optimizer", "adam"], ["optimizer", "'adam'"]),
    "unknown schedule": (["--progressive", "nosuch"], ["nosuch"]),
    "zero stages": (["--stages", "0"], ["stages", "0"]),
    "EMA decay of 1": (["--ema-decay", "1.0"], ["ema_decay", "1.0"]),
    "unknown dataset": (["--dataset", "cifar11:/x"], ["cifar11:/x"]),
    "init of an unknown kind": (["--init", "timm:/x.pth"], ["init", "timm:/x.pth"]),
    "held-out fraction 0": (["--heldout-fraction", "0"], ["heldout_fraction", "0"]),
    "fewer epochs than stages": (["--epochs", "2", "--stages", "4"], ["epochs", "2", "4"]),
    "image size below the stride": (["--image-size", "2"], ["image_size", "2", "stride"]),
    "epochs a word": (["--epochs", "abc"], ["--epochs", "'abc'"]),
}


@pytest.mark.parametrize("case", list(TRAIN_ARGS))
def test_malformed_training_arguments(case, workdir, capsys):
    flags, words = TRAIN_ARGS[case]
    base = {"--dataset": "synthetic:100", "--epochs": "4", "--out": str(workdir / "run")}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        base[flag] = value
    argv = ["train", "b0", *[item for pair in base.items() for item in pair]]
    _one_line(capsys, argv, workdir, words)
    assert not (workdir / "run").exists()


def test_a_schedule_file_with_a_duplicate_key(workdir, capsys):
    schedule = workdir / "schedule.yaml"
    schedule.write_text("image_size: [16, 32]\nimage_size: [8, 16]\n")
    argv = ["train", "b0", "--dataset", "synthetic:100", "--epochs", "4",
            "--progressive", str(schedule), "--out", str(workdir / "run")]  # fmt: skip
    _one_line(capsys, argv, workdir, ["duplicate key", "image_size"])


def test_the_corpus_is_large_enough():
    cases = len(SEARCH_CONFIGS) + len(RAW_CONFIGS) + len(TRAIN_ARGS) + 4 + 1 + 1
    assert cases >= 30
    assert os.path.basename(__file__) == "test_malformed.py"
