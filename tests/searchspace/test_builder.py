"""The builder and the published catalog."""

from __future__ import annotations

import pytest
import torch

from searchspace import build_model, count_parameters, list_catalog, load_arch
from searchspace.blocks import FusedMBConv, MBConv
from searchspace.builder import block_layout


@pytest.mark.parametrize("name", list_catalog())
def test_catalog_net_runs_forward_and_backward_at_64px(name):
    spec = load_arch(name).replace(num_classes=10)
    model = build_model(spec)
    model.train()
    images = torch.randn(2, 3, 64, 64)
    logits = model(images)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_catalog_lists_the_family_smallest_first():
    expected = ["b0", "b1", "b2", "b3", "s", "m", "l", "xl"]
    assert list_catalog() == [f"efficientnetv2-{short}" for short in expected]


def test_block_layout_threads_every_width_as_the_built_model_has_it():
    spec = load_arch("s")
    model = build_model(spec)
    blocks = [block for stage in model.stages for block in stage]
    layout = block_layout(spec)
    assert len(layout) == len(blocks) == spec.total_blocks
    for entry, block in zip(layout, blocks, strict=True):
        first_conv = block.conv_pw if isinstance(block, MBConv) else block.conv_exp
        if isinstance(first_conv, torch.nn.Identity):  # MBConv without expansion
            first_conv = block.conv_dw
        assert first_conv[0].in_channels == entry.in_channels
        assert block.has_skip == (entry.stride == 1 and entry.in_channels == entry.out_channels)


def test_residual_only_where_stride_1_and_widths_match(tiny_spec):
    model = build_model(tiny_spec)
    blocks = [block for stage in model.stages for block in stage]
    # stage 1: 8->8 stride 1 (skip); stage 2: 8->16 stride 2, then 16->16; stage 3: likewise.
    assert [b.has_skip for b in blocks] == [True, False, True, False, True]
    assert isinstance(blocks[0], FusedMBConv) and isinstance(blocks[-1], MBConv)


def test_stochastic_depth_grows_linearly_with_block_index(tiny_spec):
    spec = tiny_spec.replace(drop_path_rate=0.5)
    blocks = [block for stage in build_model(spec).stages for block in stage]
    rates = {i: b.drop_path.p for i, b in enumerate(blocks) if b.has_skip and i > 0}
    # p_i = rate * i / total_blocks, i the global block index (block 0 has p = 0: Identity).
    assert rates == {2: pytest.approx(0.5 * 2 / 5), 4: pytest.approx(0.5 * 4 / 5)}
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)


def test_se_width_comes_from_block_input_channels(tiny_spec):
    block = build_model(tiny_spec).stages[2][0]  # 16 -> 24, expand 4: hidden 64
    assert block.se.fc1.in_channels == 64
    assert block.se.fc1.out_channels == 4  # int(16 * 0.25), not int(64 * 0.25)


def test_fused_expand_one_is_a_single_conv(tiny_spec):
    block = build_model(tiny_spec).stages[0][0]
    assert isinstance(block.conv_pwl, torch.nn.Identity)
    assert block.conv_exp[0].kernel_size == (3, 3)


def test_builder_does_not_change_the_spec(tiny_spec):
    before = tiny_spec.to_dict()
    model = build_model(tiny_spec, num_classes=3)
    assert tiny_spec.to_dict() == before
    assert model.spec.num_classes == 3 and count_parameters(model) > 0


def test_bn_epsilon_of_published_nets_is_1e3():
    model = build_model(load_arch("b0"))
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1e-3}
