"""Memory: an estimate before a net is built, a refusal with a reason, and out-of-memory that
stays a failed candidate with its memory given back."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import nas.evaluate.candidate as candidate
import nas.train.device as device_module
from nas.cli import main
from nas.evaluate import EvalConfig, clear_reference_cache, evaluate_candidate
from searchspace import build_model, count_parameters, load_arch
from searchspace.profile import estimate_training_memory

TINY_REFERENCE = "stem8,f1k3s1e1c8,f1k3s2e4c16,head32"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "cache"))
    clear_reference_cache()
    yield
    clear_reference_cache()


def quick_config(**changes) -> EvalConfig:
    settings = dict(
        dataset="synthetic:200", image_size=16, batch_size=32, epochs=1, device="cpu",
        timing_steps=2, timing_warmup=1, reference=TINY_REFERENCE,
    )  # fmt: skip
    return EvalConfig(**{**settings, **changes})


def test_estimate_counts_weights_and_grows_with_batch_and_size(tiny_spec):
    small = estimate_training_memory(tiny_spec, 8, 32)
    assert small.parameters == 4 * count_parameters(build_model(tiny_spec))
    assert small.gradients == small.parameters and small.optimizer_state == 2 * small.parameters
    assert estimate_training_memory(tiny_spec, 16, 32).activations == 2 * small.activations
    # Twice the side, four times the pixels (only the pooled SE and classifier outputs stay).
    big = estimate_training_memory(tiny_spec, 8, 64).activations
    assert 3.9 * small.activations < big < 4 * small.activations
    half = estimate_training_memory(tiny_spec, 8, 32, activation_bytes=2)
    assert half.activations * 2 == small.activations


def test_estimate_is_an_upper_bound_of_what_the_forward_pass_keeps(tiny_spec):
    # Autograd's saved tensors of one training forward pass: at most the estimate's activations.
    model = build_model(tiny_spec).train()
    kept = 0

    def pack(tensor):
        nonlocal kept
        kept += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(torch.randn(8, 3, 32, 32)).sum().backward()
    estimate = estimate_training_memory(tiny_spec, 8, 32)
    assert 0 < kept <= estimate.activations * 1.5  # SiLU and SE keep inputs twice at most


def test_a_candidate_too_big_for_the_device_fails_before_it_is_built(monkeypatch, tiny_spec):
    monkeypatch.setattr(device_module, "available_memory", lambda device: 1 << 20)  # 1 MiB
    monkeypatch.setattr(candidate, "build_model", lambda spec: pytest.fail("built anyway"))
    result = evaluate_candidate(tiny_spec, quick_config())
    assert result.status == "failed" and result.accuracy is None and result.reward is None
    assert "needs about" in result.failure and "GiB free" in result.failure
    assert result.params == count_parameters(build_model(tiny_spec))


def test_nas_train_refuses_a_step_that_cannot_fit(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(device_module, "available_memory", lambda device: 1 << 20)
    argv = ["train", "b0", "--dataset", "synthetic:100", "--epochs", "4", "--image-size", "64",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs about" in err and "--batch-size" in err
    assert not (tmp_path / "run").exists()


def test_out_of_memory_is_a_failed_candidate_and_its_memory_is_released(monkeypatch, tiny_spec):
    built = []
    real_build = candidate.build_model

    def build_and_watch(spec):
        model = real_build(spec)
        built.append(weakref.ref(model))
        return model

    def out_of_memory(model, *args, **kwargs):
        # As CUDA raises it mid-step, with the model's tensors in the failing frame.
        activations = model(torch.randn(4, 3, 16, 16))
        raise torch.OutOfMemoryError(f"CUDA out of memory ({activations.shape})")

    monkeypatch.setattr(candidate, "build_model", build_and_watch)
    monkeypatch.setattr(candidate, "fit", out_of_memory)
    result = evaluate_candidate(tiny_spec, quick_config())
    assert result.status == "failed" and result.failure.startswith("out of memory on cpu")
    gc.collect()
    assert built and built[0]() is None  # nothing holds the model: the next trial has the memory
    again = evaluate_candidate(load_arch(TINY_REFERENCE), quick_config())
    assert again.status == "failed"  # the next candidate runs (and, here, meets the same fault)
