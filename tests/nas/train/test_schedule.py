"""Progressive-learning schedules: the paper's table under both interpolation formulas."""

from __future__ import annotations

import pytest
import yaml

from nas.errors import ScheduleError
from nas.train.schedule import PRESETS, SMALL_IMAGE_FLOOR, ProgressiveSchedule, load_schedule

# shared/REFERENCE.md section 6: (image size, RandAugment, Mixup, dropout) as (min, max).
PAPER_TABLE = {
    "s": ((128, 300), (5, 15), (0, 0), (0.1, 0.3)),
    "m": ((128, 380), (5, 20), (0, 0.2), (0.1, 0.4)),
    "l": ((128, 380), (5, 25), (0, 0.4), (0.1, 0.5)),
}


def column(schedule: ProgressiveSchedule, name: str) -> list[float]:
    return [getattr(stage, name) for stage in schedule.all_stages()]


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_paper_formula_runs_from_the_minimum_to_the_maximum(size):
    (i0, i1), (r0, r1), (m0, m1), (d0, d1) = PAPER_TABLE[size]
    schedule = PRESETS["paper"][size]
    assert schedule.stages == 4
    # value_i = min + (max - min) * i / (M - 1): first stage min, last stage max.
    assert column(schedule, "image_size") == [int(i0 + (i1 - i0) * i / 3) for i in range(4)]
    assert column(schedule, "randaug_magnitude") == pytest.approx(
        [r0 + (r1 - r0) * i / 3 for i in range(4)]
    )
    assert column(schedule, "mixup_alpha") == pytest.approx(
        [m0 + (m1 - m0) * i / 3 for i in range(4)]
    )
    assert column(schedule, "dropout") == pytest.approx([d0 + (d1 - d0) * i / 3 for i in range(4)])
    first, last = schedule.at(0), schedule.at(3)
    assert (first.image_size, first.randaug_magnitude, first.mixup_alpha) == (i0, r0, m0)
    assert (last.image_size, last.randaug_magnitude, last.mixup_alpha) == (i1, r1, m1)
    assert (first.dropout, last.dropout) == pytest.approx((d0, d1))


def test_paper_s_by_hand():
    stages = PRESETS["paper"]["s"].all_stages()
    assert [s.image_size for s in stages] == [128, 185, 242, 300]
    assert [s.randaug_magnitude for s in stages] == pytest.approx([5, 8.333333, 11.666667, 15])


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_reference_formula_starts_above_the_minimum_and_holds_dropout(size):
    (i0, i1), (r0, r1), (m0, m1), (_, d1) = PAPER_TABLE[size]
    if size == "s":
        r1 = 10  # the reference code's S uses RandAugment 5 -> 10
    schedule = PRESETS["reference"][size]
    # value_i = min + (max - min) * (i + 1) / M
    assert column(schedule, "image_size") == [int(i0 + (i1 - i0) * (i + 1) / 4) for i in range(4)]
    assert column(schedule, "randaug_magnitude") == pytest.approx(
        [r0 + (r1 - r0) * (i + 1) / 4 for i in range(4)]
    )
    assert column(schedule, "mixup_alpha") == pytest.approx(
        [m0 + (m1 - m0) * (i + 1) / 4 for i in range(4)]
    )
    assert column(schedule, "dropout") == pytest.approx([d1] * 4)
    assert schedule.at(3).image_size == i1


def test_reference_s_by_hand():
    stages = PRESETS["reference"]["s"].all_stages()
    assert [s.image_size for s in stages] == [171, 214, 257, 300]


def test_user_schedule_from_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {"stages": 3, "image_size": [16, 32], "randaug_magnitude": [2, 8],
             "mixup_alpha": 0.0, "dropout": {"min": 0.0, "max": 0.2}}
        )
    )  # fmt: skip
    schedule = load_schedule(str(path))
    assert column(schedule, "image_size") == [16, 24, 32]
    assert column(schedule, "dropout") == pytest.approx([0.0, 0.1, 0.2])
    assert ProgressiveSchedule.from_dict(schedule.to_dict()) == schedule


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image_size": [64, 32]}, "image_size.min must not exceed image_size.max"),
        ({"dropuot": [0, 0.1]}, "unknown key dropuot"),
        ({"stages": 0}, "stages must be an integer of at least 1, got 0"),
        ({"formula": "cosine"}, "formula must be one of paper, reference"),
        ({"dropout": [0.1, 1.5]}, "dropout.max must be in"),
        ({"randaug_magnitude": "high"}, "randaug_magnitude must be [min, max]"),
    ],
)
def test_bad_schedules_name_the_field(data, message):
    base = {"image_size": [16, 32], "randaug_magnitude": [2, 8], "mixup_alpha": 0, "dropout": 0.1}
    with pytest.raises(ScheduleError) as error:
        ProgressiveSchedule.from_dict({**base, **data})
    assert message in str(error.value)


def test_missing_schedule_file_or_unknown_preset():
    with pytest.raises(ScheduleError, match="neither a preset"):
        load_schedule("fancy")


# -- fitting a schedule to the net being trained -------------------------------------------------


def test_preset_size_from_lineage_variant_or_catalog_name(tiny_spec):
    from nas.train.schedule import preset_size_for
    from searchspace import Lineage, load_arch

    assert [preset_size_for(load_arch(f"efficientnetv2-{n}")) for n in "sml"] == ["s", "m", "l"]
    assert preset_size_for(load_arch("efficientnetv2-xl")) == "l"
    assert preset_size_for(load_arch("efficientnetv2-b0")) == "s"
    grown = tiny_spec.replace(name="mybase-grown", lineage=Lineage(base_hash="0" * 12, variant="m"))
    assert preset_size_for(grown) == "m"
    assert preset_size_for(tiny_spec) == "s"


def test_presets_at_the_published_sizes_are_the_paper_table():
    from nas.train.schedule import schedule_for
    from searchspace import load_arch

    spec = load_arch("efficientnetv2-s")  # trains at 300 px, the table's maximum for S
    assert schedule_for(spec, "paper") == PRESETS["paper"]["s"]
    assert schedule_for(spec, "reference") == PRESETS["reference"]["s"]
    for size in "ml":
        # The catalog's M and L train at 384 px (the reference code's size), the table says 380:
        # the range is scaled by 384/380, everything else is the table's.
        spec = load_arch(f"efficientnetv2-{size}")
        assert spec.train_resolution == 384
        fitted = schedule_for(spec, "paper")
        assert (
            fitted.replace(image_size=PRESETS["paper"][size].image_size) == PRESETS["paper"][size]
        )
        assert (fitted.image_size.min, fitted.image_size.max) == (round(128 * 384 / 380), 384)


def test_presets_scale_the_image_sizes_to_the_spec_train_size(tiny_spec):
    from nas.train.schedule import schedule_for

    spec = tiny_spec.replace(train_resolution=64, eval_resolution=64)  # total stride 8
    schedule = schedule_for(spec, "paper")
    # S keeps 128/300 of the maximum: round(64 * 128 / 300) = 27.
    assert (schedule.image_size.min, schedule.image_size.max) == (27, 64)
    assert column(schedule, "image_size") == [27, 39, 51, 64]
    assert column(schedule, "randaug_magnitude") == column(
        PRESETS["paper"]["s"], "randaug_magnitude"
    )
    # --image-size sets the maximum instead; --stages the number of stages.
    wide = schedule_for(spec, "reference", image_size=96, stages=2)
    assert column(wide, "image_size") == [int(41 + (96 - 41) * 0.5), 96]
    # Small images: the first stage is never below 24 px (bench/progressive.py: a 15 px first
    # stage of 36 px images learns next to nothing), nor below the maximum if that is smaller.
    assert SMALL_IMAGE_FLOOR == 24
    for largest, sizes in [(36, [24, 28, 32, 36]), (50, [24, 32, 41, 50]), (16, [16] * 4)]:
        fitted = schedule_for(tiny_spec.replace(train_resolution=largest), "paper")
        assert column(fitted, "image_size") == sizes  # the ratio alone: 15, 21, 7
    assert column(schedule_for(spec, "paper", image_size=56), "image_size") == [24, 34, 45, 56]
    # Nor below the net's total stride, when that is larger.
    last = tiny_spec.stages[-1]
    strided = tiny_spec.replace(stages=(*tiny_spec.stages, last, last), train_resolution=64)
    assert strided.total_stride == 32
    assert column(schedule_for(strided, "paper"), "image_size") == [32, 42, 53, 64]


def test_off_is_one_stage_at_the_maximum():
    from nas.train.schedule import schedule_for
    from searchspace import load_arch

    spec = load_arch("efficientnetv2-m")
    (settings,) = schedule_for(spec, "off").all_stages()
    assert (settings.image_size, settings.randaug_magnitude) == (spec.train_resolution, 20)
    assert (settings.mixup_alpha, settings.dropout) == pytest.approx((0.2, 0.4))
    (fixed,) = schedule_for(spec, "off", image_size=224).all_stages()
    assert fixed.image_size == 224


def test_schedule_for_refuses_what_cannot_apply(tiny_spec, tmp_path):
    from nas.train.schedule import schedule_for

    path = tmp_path / "tiny.yaml"
    path.write_text("image_size: [4, 32]\nrandaug_magnitude: 5\nmixup_alpha: 0\ndropout: 0.1\n")
    with pytest.raises(ScheduleError, match="image size 4 of stage 1 is below the net's total"):
        schedule_for(tiny_spec, str(path))
    with pytest.raises(ScheduleError, match="--image-size does not apply to a schedule file"):
        schedule_for(tiny_spec, str(path), image_size=32)
    with pytest.raises(ScheduleError, match="image size 4 of stage 1 is below"):
        schedule_for(tiny_spec, "off", image_size=4)
    with pytest.raises(ScheduleError, match="--stages does not apply"):
        schedule_for(tiny_spec, "off", stages=2)
    with pytest.raises(ScheduleError, match="stages must be an integer of at least 1, got 0"):
        schedule_for(tiny_spec, "paper", stages=0)
    with pytest.raises(ScheduleError, match="schedule size must be one of s, m, l, got 'xs'"):
        schedule_for(tiny_spec, "paper", size="xs")
