"""Compound scaling: rounding rules, B1..B3 against timm, S/M/L growth, budgets, presets."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling import (
    DEFAULT_PRESETS,
    CompoundRule,
    ScalingError,
    ScalingPlan,
    dropout_for_depth,
    load_presets,
    resolve_variants,
    round_filters,
    round_repeats,
    scale_spec,
    scale_to_budget,
    spec_flops,
    spec_parameters,
)
from searchspace import ArchSpec, StageSpec, build_model, count_flops, load_arch


@pytest.fixture(scope="module")
def found_base() -> ArchSpec:
    """A base as a search would find it: mixed blocks and kernels, searched at a small size."""
    return ArchSpec(
        name="found",
        stem_channels=24,
        stages=(
            StageSpec("fused", repeats=1, kernel=3, stride=1, expand_ratio=1, out_channels=16),
            StageSpec("fused", repeats=2, kernel=3, stride=2, expand_ratio=4, out_channels=32),
            StageSpec("fused", repeats=2, kernel=5, stride=2, expand_ratio=4, out_channels=48),
            StageSpec("mbconv", 3, 3, 2, 4, 96, se_ratio=0.25),
            StageSpec("mbconv", 4, 5, 1, 6, 112, se_ratio=0.25),
            StageSpec("mbconv", 5, 3, 2, 6, 160, se_ratio=0.25),
        ),
        head_channels=1280,
        num_classes=10,
        train_resolution=48,
        eval_resolution=64,
    )


# ---------------------------------------------------------------------------------------------
# Rounding (shared/REFERENCE.md section 4)


@settings(max_examples=300, deadline=None)
@given(
    channels=st.integers(1, 2048),
    width=st.floats(0.05, 5.0),
    divisor=st.sampled_from([1, 4, 8, 16]),
    round_limit=st.sampled_from([0.0, 0.9]),
)
def test_round_filters_matches_timms_make_divisible(channels, width, divisor, round_limit):
    timm_layers = pytest.importorskip("timm.layers")
    expected = timm_layers.make_divisible(channels * width, divisor, round_limit=round_limit)
    assert round_filters(channels, width, divisor, round_limit) == expected


def test_round_filters_v2_rule_versus_v1_ninety_percent_rule():
    # 16 * 0.6 = 9.6 rounds down to 8, which is below 90% of 9.6: V1 adds a divisor, V2 does not.
    assert round_filters(16, 0.6, 8, round_limit=0.0) == 8
    assert round_filters(16, 0.6, 8, round_limit=0.9) == 16
    assert round_filters(1280, 1.1) == 1408  # the head of B2
    assert round_filters(32, 1.1) == 32  # the stem of B2: 35.2 rounds down
    assert round_filters(3, 0.1) == 8  # never below one divisor


def test_round_repeats_is_the_reference_ceil():
    assert [round_repeats(r, 1.1) for r in (1, 2, 3, 5, 8)] == [2, 3, 4, 6, 9]  # B1's stages
    assert round_repeats(5, 1.0) == 5
    # The reference multiplies in floating point: 25 * 2.2 is just above 55, so 56 blocks.
    assert round_repeats(25, 2.2) == math.ceil(25 * 2.2) == 56


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_rounding_rejects_coefficients_at_or_below_zero(bad):
    with pytest.raises(ScalingError, match="width"):
        round_filters(16, bad)
    with pytest.raises(ScalingError, match="depth"):
        round_repeats(3, bad)


# ---------------------------------------------------------------------------------------------
# B1..B3: B0 plus their coefficients are the published networks


def _blocks(model: torch.nn.Module, timm_model: bool) -> list[torch.nn.Module]:
    stages = model.blocks if timm_model else model.stages
    return [block for stage in stages for block in stage]


def _shapes(module: torch.nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in module.parameters()]


@pytest.mark.parametrize("variant", ["b1", "b2", "b3"])
def test_b_series_in_the_catalog_is_b0_scaled_by_its_recorded_coefficients(variant):
    # B1..B3 ship as data (no catalog -> scaling import); scaling must reproduce them exactly.
    spec = load_arch(f"efficientnetv2-{variant}")
    lineage = spec.lineage
    plan = ScalingPlan(
        width=lineage.width,
        depth=lineage.depth,
        train_resolution=spec.train_resolution,
        eval_resolution=spec.eval_resolution,
        variant=lineage.variant,
    )
    scaled = scale_spec(load_arch("b0"), plan, name=spec.name)
    assert scaled == spec and scaled.lineage == lineage
    assert scaled.to_yaml() == spec.to_yaml()


@pytest.mark.parametrize(
    ("variant", "published_params", "sizes", "dropout"),
    [
        ("b1", 8.1e6, (192, 240), 0.2),
        ("b2", 10.1e6, (208, 260), 0.3),
        ("b3", 14.4e6, (240, 300), 0.3),
    ],
)
def test_b_series_is_timms_network_layer_for_layer(variant, published_params, sizes, dropout):
    timm = pytest.importorskip("timm")
    spec = load_arch(f"efficientnetv2-{variant}")
    assert spec.lineage is not None and spec.lineage.base_hash == load_arch("b0").hash
    assert (spec.train_resolution, spec.eval_resolution) == sizes
    assert spec.dropout == dropout
    ours = build_model(spec)
    theirs = timm.create_model(f"tf_efficientnetv2_{variant}", pretrained=False)

    ours_params = sum(p.numel() for p in ours.parameters())
    assert ours_params == sum(p.numel() for p in theirs.parameters())
    assert round(ours_params / 1e5) == round(published_params / 1e5)  # the paper's 8.1M etc.
    assert [len(stage) for stage in ours.stages] == [len(stage) for stage in theirs.blocks]
    assert _shapes(ours.stem) == _shapes(theirs.conv_stem) + _shapes(theirs.bn1)
    assert _shapes(ours.head) == _shapes(theirs.conv_head) + _shapes(theirs.bn2)
    assert _shapes(ours.classifier) == _shapes(theirs.classifier)

    # Block by block: the same tensors in the same order, the same residuals, the same strides.
    x_ours = ours.stem(torch.zeros(1, 3, 64, 64))
    x_theirs = theirs.bn1(theirs.conv_stem(torch.zeros(1, 3, 64, 64)))
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        for mine, other in zip(_blocks(ours, False), _blocks(theirs, True), strict=True):
            assert _shapes(mine) == _shapes(other)
            assert mine.has_skip == other.has_skip
            x_ours, x_theirs = mine(x_ours), other(x_theirs)
            assert x_ours.shape == x_theirs.shape


def test_dropout_rule_reproduces_the_published_b_series():
    # (depth, dropout) of EfficientNet B0..B7 in the reference code's configs; V2's B0..B3 share
    # B0..B3's coefficients and dropouts.
    published = [(1.0, 0.2), (1.1, 0.2), (1.2, 0.3), (1.4, 0.3), (1.8, 0.4), (2.2, 0.4)]
    published += [(2.6, 0.5), (3.1, 0.5), (3.6, 0.5)]
    assert [dropout_for_depth(0.2, depth) for depth, _ in published] == [d for _, d in published]


# ---------------------------------------------------------------------------------------------
# Compound scaling from spec to spec


def test_scaled_spec_records_its_lineage_and_round_trips(found_base):
    plan = CompoundRule().plan(1.5)
    spec = scale_spec(found_base, plan)
    lineage = spec.lineage
    assert lineage.base_hash == found_base.hash and lineage.base_name == "found"
    assert lineage.phi == 1.5
    assert (lineage.width, lineage.depth) == pytest.approx((1.1**1.5, 1.2**1.5))
    assert lineage.resolution == pytest.approx(spec.eval_resolution / 64)
    again = ArchSpec.from_yaml(spec.to_yaml())
    assert again == spec and again.lineage == spec.lineage and again.name == spec.name


def test_scaling_keeps_block_types_and_rounds_every_width(found_base):
    spec = scale_spec(found_base, ScalingPlan(width=1.37, depth=1.55))
    for before, after in zip(found_base.stages, spec.stages, strict=True):
        assert (after.block, after.kernel, after.stride) == (
            before.block,
            before.kernel,
            before.stride,
        )
        assert (after.expand_ratio, after.se_ratio) == (before.expand_ratio, before.se_ratio)
        assert after.out_channels == round_filters(before.out_channels, 1.37)
        assert after.repeats == math.ceil(before.repeats * 1.55)
    assert spec.stem_channels == round_filters(24, 1.37)
    assert spec.head_channels == round_filters(1280, 1.37)
    assert spec.channel_divisor == 8 and spec.channel_round_limit == 0.0


def test_v1_rounding_is_an_option_recorded_in_the_spec(found_base):
    v1 = scale_spec(found_base, ScalingPlan(width=0.6, channel_round_limit=0.9))
    v2 = scale_spec(found_base, ScalingPlan(width=0.6))
    assert v1.stages[0].out_channels == 16 and v2.stages[0].out_channels == 8
    assert v1.channel_round_limit == 0.9
    # The recorded rule carries on: growing the V1 spec again uses the 90% rule by default.
    assert scale_spec(v1, ScalingPlan(width=1.0)).channel_round_limit == 0.9


def test_phi_zero_is_the_base(found_base):
    spec = scale_spec(found_base, CompoundRule().plan(0.0))
    assert spec == found_base  # same architecture and sizes (name and lineage are labels)
    assert CompoundRule().coefficients(2.0) == pytest.approx((1.21, 1.44, 1.3225))
    assert CompoundRule().flops_per_phi == pytest.approx(1.2 * 1.1**2 * 1.15**2)


@pytest.mark.parametrize("field", ["width", "depth", "resolution"])
@pytest.mark.parametrize("bad", [0, -0.5])
def test_plan_rejects_coefficients_at_or_below_zero(field, bad):
    with pytest.raises(ScalingError, match=f"{field} must be greater than 0"):
        ScalingPlan(**{field: bad})


@pytest.mark.parametrize("field", ["alpha", "beta", "gamma"])
def test_compound_rule_rejects_bases_at_or_below_zero(field):
    with pytest.raises(ScalingError, match=field):
        CompoundRule(**{field: 0})


def test_explicit_sizes_and_the_eval_cap(found_base):
    spec = scale_spec(found_base, ScalingPlan(eval_resolution=96))
    assert (spec.train_resolution, spec.eval_resolution) == (72, 96)  # the base's 3:4 ratio
    big = load_arch("b0")
    capped = scale_spec(big, ScalingPlan(resolution=3.0, max_eval_resolution=480))
    assert capped.eval_resolution == 480
    assert capped.train_resolution == round(192 * 480 / 224 / 4) * 4  # same factor as eval
    assert scale_spec(big, ScalingPlan(resolution=3.0)).eval_resolution == 672  # no cap asked


# ---------------------------------------------------------------------------------------------
# S, M, L


def test_s_m_l_from_a_found_base_grow_strictly(found_base):
    specs = [found_base] + [
        scale_spec(found_base, plan) for plan in resolve_variants("s,m,l", DEFAULT_PRESETS)
    ]
    params = [spec_parameters(spec) for spec in specs]
    flops = [spec_flops(spec) for spec in specs]
    assert params == sorted(set(params)), params
    assert flops == sorted(set(flops)), flops
    assert [spec.lineage.variant for spec in specs[1:]] == ["s", "m", "l"]
    dropouts = [spec.dropout for spec in specs[1:]]
    assert dropouts == sorted(set(dropouts))  # classifier dropout grows with size
    assert all(spec.drop_path_rate == found_base.drop_path_rate for spec in specs)


def test_presets_cap_the_eval_size_at_480():
    for base in (
        load_arch("b0"),
        load_arch("b0").replace(train_resolution=256, eval_resolution=320),
    ):
        for plan in DEFAULT_PRESETS.values():
            spec = scale_spec(base, plan)
            assert spec.eval_resolution <= 480
            assert spec.train_resolution < spec.eval_resolution
    # L from B0 asks for 600 px (EfficientNet-B7's size) and gets the cap.
    assert scale_spec(load_arch("b0"), DEFAULT_PRESETS["l"]).eval_resolution == 480


def test_m_and_l_give_their_extra_depth_to_the_later_stages(found_base):
    for name in ("m", "l"):
        plan = DEFAULT_PRESETS[name]
        spec = scale_spec(found_base, plan)
        uniform = [round_repeats(stage.repeats, plan.depth) for stage in found_base.stages]
        extra = [stage.repeats - u for stage, u in zip(spec.stages, uniform, strict=True)]
        assert extra[:-2] == [0, 0, 0, 0] and min(extra[-2:]) > 0, extra
    # Across the family, the last two stages take most of the blocks added from S to L.
    s, l_ = (scale_spec(found_base, DEFAULT_PRESETS[n]) for n in ("s", "l"))
    added = [b.repeats - a.repeats for a, b in zip(s.stages, l_.stages, strict=True)]
    assert sum(added[-2:]) > sum(added[:-2])


def test_published_s_is_b0_at_the_s_presets_depth():
    # The reference code puts S at about B0 * (width 1.4, depth 1.8): its repeats are exactly that.
    s = scale_spec(load_arch("b0"), DEFAULT_PRESETS["s"])
    assert [st.repeats for st in s.stages] == [st.repeats for st in load_arch("s").stages]


def test_user_presets_override_and_extend(tmp_path):
    path = tmp_path / "presets.yaml"
    path.write_text("s: {dropout: 0.25}\nXL: {width: 2.2, depth: 3.6, resolution: 2.9}\n")
    presets = load_presets(path)
    assert presets["s"].dropout == 0.25 and presets["s"].width == 1.4  # only dropout changed
    assert presets["xl"].width == 2.2 and presets["xl"].variant == "xl"
    assert resolve_variants("s, XL", presets) == [presets["s"], presets["xl"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s: {widht: 1.2}", "unknown key s.widht"),
        ("s: {depth: 0}", "s.depth must be greater than 0"),
        ("- s", "mapping"),
        ("s: [1]", "preset s must be a mapping"),
    ],
)
def test_bad_preset_files_name_the_field(tmp_path, text, message):
    path = tmp_path / "presets.yaml"
    path.write_text(text)
    with pytest.raises(ScalingError, match=message):
        load_presets(path)


def test_missing_presets_file_and_unknown_variant(tmp_path):
    with pytest.raises(ScalingError, match="does not exist"):
        load_presets(tmp_path / "nope.yaml")
    with pytest.raises(ScalingError, match="unknown variant 'q'"):
        resolve_variants("s,q", DEFAULT_PRESETS)


# ---------------------------------------------------------------------------------------------
# Budgets


def test_layerwise_flops_equal_fvcore_on_the_whole_net(found_base):
    for spec in (found_base, scale_spec(found_base, DEFAULT_PRESETS["m"])):
        for size in (spec.eval_resolution, 57):
            assert spec_flops(spec, size) == count_flops(build_model(spec), size)


def test_parameters_on_the_meta_device_equal_a_real_build(found_base):
    spec = scale_spec(found_base, DEFAULT_PRESETS["s"])
    assert spec_parameters(spec) == sum(p.numel() for p in build_model(spec).parameters())


@pytest.mark.parametrize("target", [7.7e6, 10e6, 22e6, 54e6, 120e6])
def test_budget_hits_parameter_targets_within_5_percent(target):
    result = scale_to_budget(load_arch("b0"), target, spec_parameters)
    assert spec_parameters(result.spec) == result.value  # measured independently
    assert abs(result.value - target) / target <= 0.05
    assert result.spec.eval_resolution <= 480
    assert result.spec.lineage.variant == f"params{target:g}"


def test_budget_hits_flop_targets_within_5_percent(found_base):
    base_flops = spec_flops(found_base)
    for factor in (2.5, 8.0):
        result = scale_to_budget(found_base, factor * base_flops, spec_flops, metric="flops")
        flops = count_flops(build_model(result.spec), result.spec.eval_resolution)
        assert abs(flops - factor * base_flops) / (factor * base_flops) <= 0.05
        assert result.on_path == (result.spec.lineage.phi is not None)


def test_budget_between_two_steps_refines_width_off_the_path():
    # Just above phi = 0 every stage of B0 gains a block (7.14M -> 8.14M); 7.7M is in the gap.
    result = scale_to_budget(load_arch("b0"), 7.7e6, spec_parameters)
    assert not result.on_path and result.spec.lineage.phi is None
    assert abs(result.relative_error) <= 0.05


def test_budget_measures_each_distinct_spec_once(found_base):
    seen: list[str] = []

    def measure(spec: ArchSpec) -> float:
        seen.append(spec.hash)
        return float(spec_parameters(spec))

    result = scale_to_budget(found_base, 3 * spec_parameters(found_base), measure)
    assert len(seen) == len(set(seen)) == result.evaluations


def test_budget_rejects_targets_below_the_base_or_out_of_reach(found_base):
    with pytest.raises(ScalingError, match="below the base"):
        scale_to_budget(found_base, 1e5, spec_parameters)
    with pytest.raises(ScalingError, match="out of reach"):
        scale_to_budget(found_base, 1e12, spec_parameters, max_phi=2.0)
    with pytest.raises(ScalingError, match="greater than 0"):
        scale_to_budget(found_base, 0, spec_parameters)


def test_confirm_keeps_one_lucky_sample_from_deciding(found_base):
    target = 4 * spec_parameters(found_base)
    lucky: set[str] = set()

    def noisy(spec: ArchSpec) -> float:
        true = float(spec_parameters(spec))
        # A spec 8-30% over the target reads exactly on target once, as a step time can.
        if 1.08 <= true / target <= 1.3 and spec.hash not in lucky:
            lucky.add(spec.hash)
            return target
        return true

    fooled = scale_to_budget(found_base, target, noisy)
    assert spec_parameters(fooled.spec) / target > 1.08  # without confirmation, it is fooled
    lucky.clear()
    result = scale_to_budget(found_base, target, noisy, confirm=2)
    assert abs(spec_parameters(result.spec) - target) / target <= 0.05
    assert result.measurements > result.evaluations
