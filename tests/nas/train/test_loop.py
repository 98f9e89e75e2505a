"""The training loop: optimizer groups, LR schedule, learning, determinism, NaN stops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nas.data import load_dataset
from nas.errors import NonFiniteLossError
from nas.train.loop import TrainState, evaluate_accuracy, fit, train_one_epoch, weight_ema
from nas.train.optim import build_optimizer, build_scheduler
from nas.train.recipe import Recipe, scaled_lr
from searchspace import build_model
from searchspace.errors import EffnasError

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synthetic16():
    return load_dataset("synthetic:400", 16, seed=0)


def _lrs(config: Recipe, steps_per_epoch: int) -> list[float]:
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    lrs = []
    for _ in range(config.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_no_weight_decay_on_batchnorm_and_biases(tiny_spec):
    model = build_model(tiny_spec)
    optimizer = build_optimizer(model, Recipe(weight_decay=1e-5))
    assert isinstance(optimizer, torch.optim.RMSprop)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 1e-5 and plain["weight_decay"] == 0.0
    decayed_ids = {id(p) for p in decayed["params"]}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert id(module.weight) not in decayed_ids and id(module.bias) not in decayed_ids
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert id(module.weight) in decayed_ids, name
            if module.bias is not None:
                assert id(module.bias) not in decayed_ids, name
    count = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert count == sum(p.numel() for p in model.parameters())


def test_optimizers_by_name(tiny_spec):
    model = build_model(tiny_spec)
    sgd = build_optimizer(model, Recipe(optimizer="sgd", lr=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert isinstance(build_optimizer(model, Recipe(optimizer="adamw")), torch.optim.AdamW)
    assert scaled_lr("rmsprop", 512) == pytest.approx(0.032)  # paper: 0.016 per 256 images


def test_warmup_then_cosine_matches_the_closed_form():
    config = Recipe(epochs=3, lr=0.1, warmup_epochs=1.0, lr_schedule="cosine")
    lrs = _lrs(config, steps_per_epoch=10)
    # Linear warm-up from lr/10 to lr over 10 steps, then cosine to 0 over the other 20.
    for step in range(10):
        assert lrs[step] == pytest.approx(0.1 * (1 / 10 + (1 - 1 / 10) * step / 10))
    for step in range(10, 30):
        t = step - 10
        assert lrs[step] == pytest.approx(0.05 * (1 + math.cos(math.pi * t / 20)), abs=1e-9)


def test_exponential_schedule_decays_097_every_24_epochs():
    config = Recipe(epochs=6, lr=0.1, warmup_epochs=0.0, lr_schedule="exponential")
    lrs = _lrs(config, steps_per_epoch=10)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[24] == pytest.approx(0.1 * 0.97)  # 2.4 epochs of 10 steps
    assert lrs[48] == pytest.approx(0.1 * 0.97**2)


def test_a_small_net_learns_synthetic_patterns(tiny_spec, synthetic16):
    torch.manual_seed(0)
    model = build_model(tiny_spec)
    config = Recipe(epochs=3, lr=scaled_lr("rmsprop", 32), warmup_epochs=0.5, seed=0)
    seen = []
    result = fit(
        model,
        synthetic16.train_loader(32, seed=0),
        synthetic16.heldout_loader(64),
        config,
        device=CPU,
        on_epoch_end=lambda epoch, metrics: seen.append((epoch, metrics)),
    )
    assert result.accuracy >= 0.8  # chance is 0.1
    assert [epoch for epoch, _ in seen] == [1, 2, 3]
    assert set(seen[0][1]) == {
        "epoch",
        "train_loss",
        "accuracy",
        "lr",
        "epoch_seconds",
        "epoch_cpu_seconds",
        "images_per_second",
    }
    assert all(metrics["epoch_cpu_seconds"] > 0 for _, metrics in seen)
    assert seen[-1][1]["accuracy"] == result.accuracy
    assert seen[-1][1]["train_loss"] < seen[0][1]["train_loss"]
    assert result.history == [metrics for _, metrics in seen]


def _train_once(spec, data, seed):
    torch.manual_seed(seed)
    model = build_model(spec)
    config = Recipe(epochs=1, lr=0.004, warmup_epochs=0.5, seed=seed)
    result = fit(
        model, data.train_loader(32, seed=seed), data.heldout_loader(64), config, device=CPU
    )
    return result, [p.detach().clone() for p in model.parameters()]


def test_same_seed_same_weights_and_accuracy(tiny_spec, synthetic16):
    first, first_weights = _train_once(tiny_spec, synthetic16, seed=1)
    again, again_weights = _train_once(tiny_spec, synthetic16, seed=1)
    other, other_weights = _train_once(tiny_spec, synthetic16, seed=2)
    assert first.accuracy == again.accuracy and first.train_loss == again.train_loss
    assert all(torch.equal(a, b) for a, b in zip(first_weights, again_weights, strict=True))
    assert first.train_loss != other.train_loss
    assert not all(torch.equal(a, b) for a, b in zip(first_weights, other_weights, strict=True))


def test_nan_loss_stops_at_once(tiny_spec, synthetic16):
    torch.manual_seed(0)
    model = build_model(tiny_spec)
    calls = {"forward": 0}

    def poison(module, inputs, output):
        calls["forward"] += 1
        return output * float("nan") if calls["forward"] == 3 else output

    model.register_forward_hook(poison)
    config = Recipe(epochs=2, lr=0.004)
    with pytest.raises(NonFiniteLossError) as caught:
        fit(model, synthetic16.train_loader(32), synthetic16.heldout_loader(64), config, device=CPU)
    error = caught.value
    assert (error.epoch, error.step) == (1, 3) and math.isnan(error.loss)
    assert calls["forward"] == 3  # nothing ran after the bad step
    assert "nan" in error.reason and "epoch 1, step 3" in error.reason
    assert error.seconds > 0


def test_accuracy_against_a_constant_predictor(synthetic16):
    class AlwaysClass(nn.Module):
        def __init__(self, label: int) -> None:
            super().__init__()
            self.label = label
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            logits = torch.zeros(len(x), 10)
            logits[:, self.label] = 1.0
            return logits

    labels = torch.tensor([label for _, label in synthetic16.heldout])
    for label in (0, 3):
        accuracy = evaluate_accuracy(AlwaysClass(label), synthetic16.heldout_loader(7), device=CPU)
        assert accuracy == pytest.approx((labels == label).float().mean().item())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"momentum": -0.1}, "momentum"),
    ],
)
def test_bad_train_config_names_the_field(changes, field):
    with pytest.raises(EffnasError, match=field):
        Recipe(**changes)


def test_mixup_sees_device_batches_and_the_ema_follows_each_step(tiny_spec, synthetic16):
    torch.manual_seed(0)
    model = build_model(tiny_spec)
    config = Recipe(epochs=1, lr=0.004)
    optimizer = build_optimizer(model, config)
    loader = synthetic16.train_loader(32, seed=0)
    scheduler = build_scheduler(optimizer, config, len(loader))
    state = TrainState(
        model, optimizer, scheduler, nn.CrossEntropyLoss(), ema=weight_ema(model, 0.9)
    )
    seen_labels, losses, lrs_at_ema = [], [], []

    def soften(images, labels):
        # Class probabilities instead of indices: what v2.MixUp hands the loss.
        soft = nn.functional.one_hot(labels, 10).float()
        seen_labels.append(soft.shape)
        return images * 0.5, soft

    def keep(loss):
        losses.append(float(loss))
        return loss

    update = state.ema.update_parameters

    def update_and_note(model):
        lrs_at_ema.append(optimizer.param_groups[0]["lr"])
        update(model)

    state.ema.update_parameters = update_and_note
    stats = train_one_epoch(state, loader, device=CPU, mixup=soften, reduce_loss=keep)
    assert len(seen_labels) == len(loader) == stats.steps == len(lrs_at_ema)
    assert all(shape == (32, 10) for shape in seen_labels)
    assert stats.train_loss == pytest.approx(sum(losses) / len(losses))
    assert int(state.ema.n_averaged) == stats.steps
    # The EMA follows after the scheduler stepped: the lr it sees is the next step's.
    assert lrs_at_ema[-1] == scheduler.get_last_lr()[0]
