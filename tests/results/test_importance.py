"""Which choices matter: PED-ANOVA importances on synthetic studies whose metrics depend on known
choices, checked against Optuna run on the original study, and the report's section."""

from __future__ import annotations

import warnings

import optuna
import pytest

from results import METRICS, study_frame
from results.importance import MIN_TRIALS, choice_label, param_importances
from results.report import write_report
from tests.results.synthetic_study import DRIVERS, fill_study

OBJECTIVES = ["accuracy", "step_time_norm", "params", "reward"]


@pytest.fixture(scope="module")
def big_study() -> optuna.Study:
    """200 completed trials of the quick search's space (real parameters, conditional SE)."""
    return fill_study(optuna.storages.InMemoryStorage(), "drivers", "pareto", n_complete=200)


def test_importances_find_the_choices_each_metric_depends_on(big_study):
    results = {result.objective: result for result in param_importances(
        study_frame(big_study), OBJECTIVES)}  # fmt: skip
    for objective, drivers in DRIVERS.items():
        result = results[objective]
        assert not result.reason and result.trials == 200 and result.top == 20
        assert set(list(result.values)[: len(drivers)]) == set(drivers), result.values
        assert sum(result.values.values()) == pytest.approx(1.0)
    # Conditional parameters take part: SE exists only for MBConv stages.
    assert {f"s{stage}_mbconv_se" for stage in range(1, 5)} <= set(results["accuracy"].values)
    assert set(results["reward"].values) == set(results["accuracy"].values)


def test_importances_equal_optunas_on_the_study_itself(big_study):
    """The frame keeps what Optuna needs: the same numbers as ``get_param_importances`` on the
    stored trials (in-memory study rebuilt from the frame vs. the original)."""
    for result in param_importances(study_frame(big_study), OBJECTIVES):
        sign = -1.0 if METRICS[result.objective].maximize else 1.0
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(
            target_quantile=result.top / result.trials
        )
        with warnings.catch_warnings():  # Optuna: "computes ... to achieve low target values"
            warnings.simplefilter("ignore")
            expected = optuna.importance.get_param_importances(
                big_study,
                evaluator=evaluator,
                target=lambda trial, name=result.objective, sign=sign: (
                    sign * trial.user_attrs[name]
                ),
            )
        assert result.values == pytest.approx(expected, rel=1e-9)


def test_small_or_choiceless_studies_get_a_reason_not_an_error():
    small = study_frame(fill_study(optuna.storages.InMemoryStorage(), "s", "pareto", n_complete=6))
    for result in param_importances(small, OBJECTIVES):
        assert result.values == {} and result.trials == 6
        assert result.reason == f"6 completed trials; at least {MIN_TRIALS} are needed to tell " \
            "the choices apart"  # fmt: skip
    bare = optuna.create_study(directions=["maximize", "minimize"])
    for index in range(MIN_TRIALS):
        bare.add_trial(optuna.trial.create_trial(
            values=[0.5, index], user_attrs={"accuracy": 0.5, "params": index}))  # fmt: skip
    accuracy, params = param_importances(study_frame(bare), ["accuracy", "params"])
    assert accuracy.reason == params.reason == "the trials record no choices (Optuna parameters)"


def test_a_constant_objective_gets_a_reason():
    study = fill_study(optuna.storages.InMemoryStorage(), "c", "pareto", n_complete=20)
    frame = study_frame(study)
    frame.loc[frame["state"] == "COMPLETE", "params"] = 1000
    (result,) = param_importances(frame, ["params"])
    assert result.reason == "every trial has the same params" and not result.values


def test_choice_labels():
    assert choice_label("s1_block") == "stage 1 block"
    assert choice_label("s12_expand") == "stage 12 expansion"
    assert choice_label("s3_mbconv_se") == "stage 3 SE (MBConv)"
    assert choice_label("s3_fused_se") == "stage 3 SE (Fused)"
    assert choice_label("stem_channels") == "stem_channels"


def test_report_shows_importances_and_says_which_studies_are_too_small(tmp_path, big_study):
    frames = [study_frame(big_study), study_frame(fill_study(
        optuna.storages.InMemoryStorage(), "tiny", "reward", n_complete=4))]  # fmt: skip
    files = write_report(frames, tmp_path / "report.html", png=False)
    text = files.html.read_text()
    for objective in OBJECTIVES:
        assert f'id="importance-{objective}"' in text
    assert "stage 2 kernel" in text and "conditional PED-ANOVA" in text
    assert (
        "tiny (accuracy, step_time_norm, params, reward): 4 completed trials; at least 10 are "
        "needed to tell the choices apart"
    ) in text
    # A page of studies all too small: the section says so, and the report is still written.
    files = write_report(frames[1:], tmp_path / "small.html", png=False)
    text = files.html.read_text()
    assert "No study has importances to show." in text and 'id="importance-' not in text
