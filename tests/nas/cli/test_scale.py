"""``nas scale``: presets, coefficients, phi and budgets from the command line; bad input."""

from __future__ import annotations

import json

import pytest

from nas.cli import main
from searchspace import ArchSpec


@pytest.fixture
def tiny_file(tmp_path, tiny_spec):
    return str(tiny_spec.save(tmp_path / "tiny.yaml"))


def _json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_variants_write_one_spec_each_and_grow(capsys, tmp_path, tiny_file, tiny_spec):
    out = tmp_path / "scaled"
    data = _json(capsys, ["scale", tiny_file, "--variants", "s,m,l", "--out", str(out), "--json"])
    rows = data["variants"]
    assert [row["variant"] for row in rows] == ["s", "m", "l"]
    params = [data["base"]["params"]] + [row["params"] for row in rows]
    flops = [data["base"]["flops"]] + [row["flops"] for row in rows]
    assert params == sorted(set(params)) and flops == sorted(set(flops))
    for row in rows:
        spec = ArchSpec.load(row["path"])
        assert spec.hash == row["hash"] and spec.name == f"tiny-{row['variant']}"
        assert spec.lineage.base_hash == tiny_spec.hash
        assert row["eval_resolution"] <= 480
    assert sorted(p.name for p in out.iterdir()) == ["tiny-l.yaml", "tiny-m.yaml", "tiny-s.yaml"]


def test_table_lists_the_base_and_every_variant(capsys, tiny_file):
    assert main(["scale", tiny_file]) == 0  # s, m, l by default
    out = capsys.readouterr().out
    for word in ("variant", "width", "depth", "train/eval", "repeats", "channels", "params"):
        assert word in out
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[3:7]] == ["base", "s", "m", "l"]


def test_explicit_coefficients_and_phi(capsys, tiny_file):
    row = _json(
        capsys,
        ["scale", tiny_file, "--width", "1.2", "--depth", "1.4", "--resolution", "40/48", "--json"],
    )["variants"][0]
    assert (row["width"], row["depth"]) == (1.2, 1.4)
    assert (row["train_resolution"], row["eval_resolution"]) == (40, 48)
    assert row["repeats"] == [2, 3, 3]  # ceil(1.4 * [1, 2, 2])
    row = _json(capsys, ["scale", tiny_file, "--phi", "1", "--json"])["variants"][0]
    assert row["phi"] == 1.0 and row["depth"] == pytest.approx(1.2)
    row = _json(capsys, ["scale", tiny_file, "--resolution", "1.5x", "--json"])["variants"][0]
    assert row["eval_resolution"] == 48


def test_parameter_budget(capsys, tiny_file, tiny_spec):
    data = _json(capsys, ["scale", tiny_file, "--target-params", "120k", "--json"])
    budget = data["variants"][0]["budget"]
    assert budget["target"] == 120_000 and abs(budget["relative_error"]) <= 0.05
    assert abs(data["variants"][0]["params"] - 120_000) <= 6_000


def test_measure_times_each_net_with_nas_timing(capsys, tiny_file):
    pytest.importorskip("nas.evaluate.timing")
    argv = ["scale", tiny_file, "--variants", "s", "--measure", "--device", "cpu", "--json"]
    argv += ["--batch-size", "2", "--timing-steps", "2", "--timing-warmup", "1"]
    data = _json(capsys, argv)
    assert data["base"]["step_time_ms"] > 0 and data["variants"][0]["step_time_ms"] > 0
    assert data["timing"]["steps"] == 2 and data["timing"]["clock"] == "wall"


def test_a_whole_number_written_with_a_decimal_point_is_accepted(capsys, tiny_file):
    # `--batch-size 8.0` used to pass the check and then die in int('8.0') after the work.
    argv = ["scale", tiny_file, "--variants", "s", "--measure", "--device", "cpu", "--json"]
    argv += ["--batch-size", "2.0", "--timing-steps", "2", "--timing-warmup", "1.0"]
    data = _json(capsys, argv)
    assert data["timing"]["batch_size"] == 2 and data["timing"]["warmup"] == 1


def test_step_time_budget_confirms_its_finalists(capsys, monkeypatch, tiny_file):
    # The wiring of --target-step-ms with a deterministic stand-in for the timer (real step
    # times on a shared CPU are too noisy for a test; bench/scale_step_time.py measures them).
    from nas.cli import scale
    from scaling import spec_parameters

    calls: list[str] = []

    def fake_timer(timing):
        assert (timing["batch_size"], timing["steps"]) == (4, 10)

        def measure(spec):
            calls.append(spec.hash)
            return spec_parameters(spec) / 1000.0  # "ms"

        return measure

    monkeypatch.setattr(scale, "_step_time_measure", fake_timer)
    data = _json(
        capsys, ["scale", tiny_file, "--target-step-ms", "150", "--batch-size", "4", "--json"]
    )
    budget = data["variants"][0]["budget"]
    assert budget["metric"] == "step_ms" and abs(budget["relative_error"]) <= 0.05
    assert budget["measurements"] > budget["evaluations"]  # the finalists were re-measured
    assert data["variants"][0]["name"] == "tiny-step150ms"
    assert data["variants"][0]["step_time_ms"] == pytest.approx(budget["value"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--width", "0"], "--width must be greater than 0"),
        (["--depth", "-1"], "--depth must be greater than 0"),
        (["--resolution", "0x"], "--resolution must be greater than 0"),
        (["--resolution", "big"], "--resolution must be"),
        (["--alpha", "0", "--phi", "1"], "--alpha must be greater than 0"),
        (["--phi", "1", "--width", "2"], "give one of"),
        (["--variants", "s,q"], "unknown variant 'q'"),
        (["--target-params", "10"], "below the base"),
        (["--target-flops", "lots"], "--target-flops must be a number"),
        (["--presets", "no-such-presets.yaml"], "does not exist"),
        (["--measure", "--timing-clock", "sundial"], "--timing-clock must be wall or cpu"),
        (["--measure", "--batch-size", "0"], "--batch-size must be a whole number of at least 1"),
        (["--measure", "--batch-size", "8.5"], "--batch-size must be a whole number"),
        (["--resolution", "240/0"], "--resolution must be a whole number of at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tiny_file, argv, message):
    assert main(["scale", tiny_file, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas scale: error:")
    assert message in err and "Traceback" not in err


def test_missing_spec_file_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["scale", str(tmp_path / "best.yaml"), "--variants", "s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
