"""The search space: sampling, validation and the search config."""

from __future__ import annotations

import itertools
import random

import optuna
import pytest
import yaml

from nas.errors import ConfigError
from nas.search import SearchConfig
from searchspace import ArchSpec, SpecError, build_model
from searchspace.space import SearchSpace
from searchspace.spec import StageSpec
from tests import REPO


def small_space(**overrides) -> dict:
    space = {
        "stem_channels": 8,
        "head_channels": 32,
        "num_classes": 10,
        "train_resolution": 32,
        "eval_resolution": 32,
        "se_ratios": [0.0, 0.25],
        "stages": [
            {"out_channels": 8, "stride": 1, "repeats": [1, 2]},
            {"out_channels": 16, "stride": 2, "repeats": [1, 3], "kernels": [3]},
        ],
    }
    space.update(overrides)
    return space


def test_suggest_draws_valid_specs_from_optuna_trials():
    space = SearchSpace.from_dict(small_space())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        spec = space.suggest(trial)
        assert isinstance(spec, ArchSpec)
        assert [s.out_channels for s in spec.stages] == [8, 16]
        assert [s.stride for s in spec.stages] == [1, 2]
        assert spec.stages[1].kernel == 3
        assert 1 <= spec.stages[1].repeats <= 3
        for stage in spec.stages:
            if stage.block == "fused":
                assert stage.se_ratio == 0.0  # the published nets put no SE on fused stages
        seen.add(spec.hash)
        study.tell(trial, 0.0)
    assert len(seen) > 10  # the space is really explored


def test_single_choice_is_not_a_decision():
    space = SearchSpace.from_dict(small_space())
    study = optuna.create_study()
    trial = study.ask()
    space.suggest(trial)
    assert "s2_kernel" not in trial.params  # one kernel allowed in stage 2
    assert "s1_kernel" in trial.params


def test_random_sample_is_reproducible_and_builds():
    space = SearchSpace.from_dict(small_space())
    first = [space.sample(random.Random(3)) for _ in range(1)]
    again = [space.sample(random.Random(3)) for _ in range(1)]
    assert first == again
    build_model(first[0])


def test_space_size_counts_every_architecture():
    space = SearchSpace.from_dict(small_space())
    # stage 1: (mbconv x 2 SE + fused x 1) x 2 repeats x 2 kernels x 3 expansions = 36
    # stage 2: 3 block/SE options x 3 repeats x 1 kernel x 3 expansions = 27
    assert space.size == 36 * 27


def _product_of_stage_choices(space: SearchSpace) -> set[ArchSpec]:
    """Every spec of ``space``, written out independently of ``suggest``: per stage, every block
    with its own SE options, every repeat count, kernel and expansion."""
    per_stage = []
    for choices in space.stages:
        low, high = choices.repeats
        options = []
        for block in choices.blocks:
            se_ratios = choices.se_ratios if block == "mbconv" else choices.fused_se_ratios
            for repeats, kernel, expand, se_ratio in itertools.product(
                range(low, high + 1), choices.kernels, choices.expand_ratios, se_ratios
            ):
                options.append(
                    StageSpec(
                        block,
                        repeats,
                        kernel,
                        choices.stride,
                        expand,
                        choices.out_channels,
                        se_ratio,
                    )
                )
        per_stage.append(options)
    return {space.spec_with(stages) for stages in itertools.product(*per_stage)}


@pytest.mark.parametrize(
    "space_data",
    [
        small_space(),
        # Per-stage lists, a single-option stage, a fused SE choice and a fixed depth.
        small_space(
            fused_se_ratios=[0.0, 0.25],
            stages=[
                {"out_channels": 8, "stride": 1, "repeats": 2, "blocks": ["fused"]},
                {
                    "out_channels": 16,
                    "stride": 2,
                    "repeats": [1, 2],
                    "kernels": [3, 5],
                    "expand_ratios": [4],
                    "blocks": ["mbconv"],
                    "se_ratios": [0.25],
                },
                {
                    "out_channels": 16,
                    "stride": 1,
                    "repeats": 1,
                    "blocks": ["mbconv"],
                    "kernels": [3],
                    "expand_ratios": [1],
                    "se_ratios": [0.0],
                },
            ],
        ),
    ],
)
def test_all_specs_is_exactly_the_set_the_sampler_draws(space_data):
    space = SearchSpace.from_dict(space_data)
    listed = list(space.all_specs())
    assert len(listed) == len({spec.hash for spec in listed}) == space.size
    assert set(listed) == _product_of_stage_choices(space)
    assert listed == list(space.all_specs())  # a fixed order
    # Whatever Optuna's random sampler draws through suggest() is listed.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {space.suggest(study.ask()) for _ in range(300)}
    assert drawn <= set(listed)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"stages": []}, "space.stages"),
        ({"kernels": [4]}, "kernel"),
        ({"expand_ratios": []}, "expand_ratios"),
        ({"blocks": ["conv"]}, "block"),
        ({"color": 3}, "space.color"),
        ({"stages": [{"out_channels": 8, "stride": 3, "repeats": 1}]}, "stride"),
        ({"stages": [{"out_channels": 8, "stride": 1, "repeats": [3, 1]}]}, "repeats"),
        ({"stages": [{"out_channels": 8, "stride": 1}]}, "repeats"),
    ],
)
def test_bad_space_names_the_field(change, field):
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        SearchSpace.from_dict(small_space(**change))


def test_shipped_configs_load():
    quick = SearchConfig.load(REPO / "configs" / "quick.yaml")
    paper = SearchConfig.load(REPO / "configs" / "paper.yaml")
    assert quick.dataset == "cluttered" and quick.concurrent == 2
    assert paper.resources.gpus == 1
    # The paper's space: both ops, kernels 3 and 5, expansions 1, 4, 6 in every stage.
    for stage in paper.space.stages:
        assert set(stage.blocks) == {"mbconv", "fused"}
        assert stage.kernels == (3, 5) and stage.expand_ratios == (1, 4, 6)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    base = yaml.safe_load((REPO / "configs" / "quick.yaml").read_text())
    for change, message in [
        ({"trails": 3}, "unknown key trails"),
        ({"trials": 0}, "trials"),
        ({"objective": "speed"}, "objective"),
        ({"sampler": "cmaes"}, "sampler"),
        ({"resources": {"cpus": 1, "gpus": 0.5}}, "resources.gpus"),
        ({"storage": "not a url"}, "storage"),
        ({"image_size": 8}, "image_size"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(ConfigError, match=message):
            SearchConfig.load(path)


def test_the_bench_space_is_small_enough_to_record_and_keeps_every_kind_of_choice():
    config = SearchConfig.load(REPO / "configs" / "bench.yaml")
    quick = SearchConfig.load(REPO / "configs" / "quick.yaml")
    specs = list(config.space.all_specs())
    assert len(specs) == config.space.size == 384
    # The quick search's proxy, and a corner of its space.
    for key in ("dataset", "image_size", "batch_size", "epochs", "evaluation"):
        assert getattr(config, key) == getattr(quick, key)
    assert config.timing_size == quick.timing_size == 36
    quick_stages = {(s.out_channels, s.stride) for s in quick.space.stages}
    assert {(s.out_channels, s.stride) for s in config.space.stages} == quick_stages
    varied = {
        kind: {tuple(getattr(stage, kind) for stage in spec.stages) for spec in specs}
        for kind in ("block", "kernel", "expand_ratio", "repeats")
    }
    assert all(len(values) > 1 for values in varied.values()), varied
