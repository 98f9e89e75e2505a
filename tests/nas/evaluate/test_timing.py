"""Step timing: the real step, statistics, the untouched model, the reference and its cache.

No assertion here depends on how fast this machine is (speed is measured in bench/).
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch

import nas.evaluate.reference as reference_module
import nas.evaluate.timing as timing_module
from nas.evaluate.reference import cache_dir, clear_reference_cache, reference_timing
from nas.evaluate.timing import StepSetup, time_train_step
from searchspace import build_model, count_parameters
from searchspace.errors import EffnasError

TINY_REFERENCE = "stem8,f1k3s1e1c8,f1k3s2e4c16,head32"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "cache"))
    clear_reference_cache()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared test machine: avoid OpenMP oversubscription stalls
    yield
    torch.set_num_threads(threads)
    clear_reference_cache()


def test_times_the_real_step_k_times_after_warmup(tiny_spec, monkeypatch):
    calls = []
    real_step = timing_module.train_step

    def counting_step(model, images, labels, optimizer, loss_fn, **kwargs):
        calls.append((tuple(images.shape), type(optimizer).__name__, model.training))
        return real_step(model, images, labels, optimizer, loss_fn, **kwargs)

    monkeypatch.setattr(timing_module, "train_step", counting_step)
    result = time_train_step(
        build_model(tiny_spec),
        StepSetup(batch_size=4, image_size=16, num_classes=10, steps=5, warmup=2),
    )
    assert len(calls) == 7
    assert set(calls) == {((4, 3, 16, 16), "RMSprop", True)}
    assert len(result.samples_ms) == 5 and all(s > 0 for s in result.samples_ms)
    assert result.median_ms == pytest.approx(statistics.median(result.samples_ms))
    q1, _, q3 = statistics.quantiles(result.samples_ms, n=4, method="inclusive")
    assert result.spread_ms == pytest.approx(q3 - q1)
    assert result.images_per_second == pytest.approx(4 / (result.median_ms / 1000))
    assert (result.device, result.precision, result.memory_format) == ("cpu", "fp32", "contiguous")
    assert result.peak_memory_mb is None  # not measured on a CPU (see nas.evaluate.timing)
    assert (result.batch_size, result.image_size) == (4, 16)


def test_optimizer_choice_is_the_one_timed(tiny_spec, monkeypatch):
    names = []
    real_step = timing_module.train_step

    def spy(model, images, labels, optimizer, loss_fn, **kwargs):
        names.append(type(optimizer).__name__)
        return real_step(model, images, labels, optimizer, loss_fn, **kwargs)

    monkeypatch.setattr(timing_module, "train_step", spy)
    time_train_step(
        build_model(tiny_spec),
        StepSetup(batch_size=2, image_size=16, num_classes=10, steps=1, warmup=0, optimizer="sgd"),
    )
    assert names == ["SGD"]


def test_model_and_global_rng_are_left_untouched(tiny_spec):
    model = build_model(tiny_spec)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    time_train_step(
        model, StepSetup(batch_size=4, image_size=16, num_classes=10, steps=2, warmup=1)
    )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert torch.equal(torch.get_rng_state(), rng)


def test_reference_is_cached_in_process_and_on_disk(monkeypatch):
    timed = []
    real = reference_module.time_train_step

    def counting(*args, **kwargs):
        timed.append(args[1].batch_size)  # (model, setup)
        return real(*args, **kwargs)

    monkeypatch.setattr(reference_module, "time_train_step", counting)
    args = {"image_size": 16, "num_classes": 10, "steps": 2, "warmup": 1}
    first = reference_timing(StepSetup(batch_size=4, **args), reference=TINY_REFERENCE)
    assert not first.cached and timed == [4]
    from searchspace import load_arch

    spec = load_arch(TINY_REFERENCE).replace(num_classes=10)
    assert first.params == count_parameters(build_model(spec))
    assert first.spec_hash == spec.hash

    again = reference_timing(
        StepSetup(batch_size=4, **args), reference=TINY_REFERENCE
    )  # in-process
    assert again.cached and again.timing == first.timing and timed == [4]

    clear_reference_cache()  # as a new process would start: only the disk cache is left
    from_disk = reference_timing(StepSetup(batch_size=4, **args), reference=TINY_REFERENCE)
    assert from_disk.cached and from_disk.timing == first.timing and timed == [4]
    stored = json.loads((cache_dir() / "reference_timings.json").read_text())
    (key,) = stored
    assert "batch=4" in key and "res=16" in key and "precision=fp32" in key and "cpu" in key
    assert stored[key]["timing"]["samples_ms"] == list(first.timing.samples_ms)  # raw ms kept

    reference_timing(
        StepSetup(batch_size=8, **args), reference=TINY_REFERENCE
    )  # another batch size is another entry
    assert timed == [4, 8]
    fresh = reference_timing(
        StepSetup(batch_size=4, **args), reference=TINY_REFERENCE, use_cache=False
    )
    assert not fresh.cached and timed == [4, 8, 4]


def test_corrupt_cache_file_is_retimed_not_fatal(tmp_path):
    path = cache_dir() / "reference_timings.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    result = reference_timing(
        StepSetup(batch_size=2, image_size=16, num_classes=10, steps=1, warmup=0),
        reference=TINY_REFERENCE,
    )
    assert not result.cached and json.loads(path.read_text())


def test_cpu_clock_times_process_cpu_time(tiny_spec, monkeypatch):
    # The CPU clock reads time.process_time around each step; the wall clock is never read.
    readings = iter(range(0, 1000, 3))  # every step takes exactly 3 "seconds" of CPU time
    monkeypatch.setattr(timing_module.time, "process_time", lambda: float(next(readings)))
    monkeypatch.setattr(timing_module.time, "perf_counter", lambda: pytest.fail("wall clock"))
    result = time_train_step(
        build_model(tiny_spec),
        StepSetup(batch_size=2, image_size=16, num_classes=10, steps=4, warmup=1, clock="cpu"),
    )
    assert result.clock == "cpu" and result.samples_ms == (3000.0,) * 4
    assert result.spread_ms == 0.0


def test_reference_cache_separates_clocks(monkeypatch):
    args = {"batch_size": 2, "image_size": 16, "num_classes": 10, "steps": 1, "warmup": 0}
    wall = reference_timing(StepSetup(**args), reference=TINY_REFERENCE)
    cpu = reference_timing(StepSetup(clock="cpu", **args), reference=TINY_REFERENCE)
    assert not cpu.cached and (wall.timing.clock, cpu.timing.clock) == ("wall", "cpu")
    assert reference_timing(StepSetup(clock="cpu", **args), reference=TINY_REFERENCE).cached


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"clock": "sundial"}, "clock"),
        ({"batch_size": 0}, "batch_size"),
        ({"image_size": 0}, "image_size"),
        ({"steps": 0}, "steps"),
        ({"precision": "fp8"}, "precision"),
        ({"device": "tpu"}, "device"),
        ({"optimizer": "lamb"}, "optimizer"),
    ],
)
def test_bad_arguments_name_the_field(tiny_spec, changes, words):
    args = {"batch_size": 2, "image_size": 16, "num_classes": 10, "steps": 1, "warmup": 0}
    with pytest.raises(EffnasError, match=words):
        time_train_step(build_model(tiny_spec), StepSetup(**{**args, **changes}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_asking_for_a_gpu_without_one_is_a_one_line_error(tiny_spec):
    with pytest.raises(EffnasError, match="no CUDA GPU"):
        time_train_step(
            build_model(tiny_spec),
            StepSetup(batch_size=2, image_size=16, num_classes=10, device="cuda"),
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_path_uses_bf16_channels_last_and_reports_peak_memory(tiny_spec):
    result = time_train_step(
        build_model(tiny_spec),
        StepSetup(batch_size=8, image_size=32, num_classes=10, device="cuda", steps=5, warmup=2),
    )
    assert result.device.startswith("cuda:")
    assert (result.precision, result.memory_format) == ("bf16", "channels_last")
    assert result.peak_memory_mb is not None and result.peak_memory_mb > 0
    assert len(result.samples_ms) == 5 and all(s > 0 for s in result.samples_ms)


def test_round_robin_times_every_net_each_round_starting_one_further(monkeypatch):
    # bench/search_quality.py re-times every net of several searches this way, on one clock.
    models = [torch.nn.Linear(2, 2) for _ in range(3)]
    order = []
    monkeypatch.setattr(
        timing_module,
        "time_train_step",
        lambda model, setup: order.append(models.index(model)) or len(order),
    )
    setup = StepSetup(batch_size=2, image_size=16, num_classes=10)
    timings = timing_module.time_round_robin(models, setup, rounds=3)
    assert order == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert timings == [[1, 6, 8], [2, 4, 9], [3, 5, 7]]  # per net, in round order
    with pytest.raises(EffnasError, match="rounds"):
        timing_module.time_round_robin(models, setup, rounds=0)


def test_step_setup_for_a_config_is_what_a_candidate_is_timed_by():
    from nas.evaluate import EvalConfig

    config = EvalConfig(batch_size=8, timing_steps=4, timing_warmup=2, timing_clock="cpu")
    setup = StepSetup.for_config(config, image_size=24, num_classes=7)
    assert (setup.batch_size, setup.image_size, setup.num_classes) == (8, 24, 7)
    assert (setup.steps, setup.warmup, setup.clock, setup.device) == (4, 2, "cpu", "auto")
    assert (setup.optimizer, setup.precision) == (config.optimizer, config.precision)
