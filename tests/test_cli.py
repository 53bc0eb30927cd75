"""Tests of the `keras-mtl` command line."""

import json

import keras
import pytest

from keras_mtl import cli
from keras_mtl import demo


@pytest.mark.slow  # long: `make test-slow` runs it
def test_demo_quick_writes_model_report_and_plot(tmp_path, capsys, monkeypatch):
    # Run from another folder, into a folder that does not exist yet: the CLI
    # writes its files there and nowhere else.
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    output = tmp_path / "out" / "run"
    assert cli.main(["demo", "--quick", "--output", str(output)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "out"]
    assert list((tmp_path / "cwd").iterdir()) == []
    assert list((tmp_path / "out").iterdir()) == [output]
    assert sorted(p.name for p in output.iterdir()) == [
        "gradient_conflict.png", "hydranet.keras", "learning_curves.png",
        "report.md", "results.json", "task_weights.png",
    ]
    tmp_path = output

    out = capsys.readouterr().out
    assert "Δm = " in out
    assert "| task " in out
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert any(line.startswith("Δm = ") for line in report.splitlines())
    for task in ("shape", "size", "segmentation", "depth"):
        assert f"| {task} " in report
    for plot in ("learning_curves.png", "task_weights.png", "gradient_conflict.png"):
        with open(tmp_path / plot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in report  # shown inline in the report
    assert "## Diagnostics" in report
    assert "| segmentation/depth " in report  # a gradient-cosine row

    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert set(results["mtl"]) == set(results["stl"]) == {
        "shape", "size", "segmentation", "depth"
    }
    assert results["mtl"]["segmentation"].keys() == {"pixel_accuracy", "miou"}
    assert isinstance(results["delta_m"], float)
    assert results["settings"]["epochs"] == 1 and results["settings"]["quick"] is True
    assert results["settings"]["weighting (multi-task model)"] == demo.DEMO_DEFAULTS["weighting"]
    # Diagnostics: one weight per task and epoch; one cosine per pair and
    # measurement (at the start, then after each of the 2 steps: 64 / 32).
    weights = results["task_weights"]
    assert weights["epochs"] == [1]
    assert all(len(weights[t]) == 1 for t in ("shape", "size", "segmentation", "depth"))
    cosine = results["gradient_cosine"]
    assert cosine["steps"] == [0, 1, 2]
    assert len(cosine["pairs"]) == 6
    for pair in cosine["pairs"].values():
        assert len(pair["per_measurement"]) == 3
        assert all(-1 <= c <= 1 for c in pair["per_measurement"])

    model = keras.models.load_model(tmp_path / "hydranet.keras", safe_mode=True)
    assert sorted(model.output_names) == ["depth", "segmentation", "shape", "size"]


@pytest.mark.parametrize(
    "argv, argument",
    [
        (["demo", "--epochs", "0"], "--epochs"),
        (["demo", "--examples", "many"], "--examples"),
        (["demo", "--image-size", "8"], "--image-size"),
        (["demo", "--verbose", "3"], "--verbose"),
        (["demo", "--weighting", "nope"], "--weighting"),
    ],
)
def test_bad_argument_exits_2_naming_it(argv, argument, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    assert f"argument {argument}" in capsys.readouterr().err


def test_epochs_error_says_expected_and_received(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--epochs", "0"])
    assert "Expected an integer >= 1. Received: '0'" in capsys.readouterr().err


def test_unknown_backbone_suggests_close_names(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["demo", "--backbone", "MobileNetV3Smal"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "argument --backbone" in err and "MobileNetV3Small" in err


def test_command_is_required(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main([])
    assert raised.value.code == 2
    assert "command" in capsys.readouterr().err


def test_weighting_error_lists_the_names(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--weighting", "uncertanty"])
    err = capsys.readouterr().err
    assert "Expected a keras_mtl.weighting name" in err and "uncertainty" in err
    assert "Received: 'uncertanty'" in err


@pytest.mark.parametrize("weighting", [None, "nope", 3])
def test_run_demo_checks_the_weighting_first(weighting, tmp_path):
    with pytest.raises(ValueError, match="argument `weighting`. Expected a keras_mtl.weighting name"):
        demo.run_demo(output=str(tmp_path), weighting=weighting)
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_weighting_names_are_case_insensitive():
    args = cli.build_parser().parse_args(["demo", "--weighting", "PCGrad"])
    assert args.weighting == "pcgrad"


def test_quick_fills_only_what_is_not_given():
    args = cli.build_parser().parse_args(["demo", "--quick", "--epochs", "3"])
    assert args.quick and args.epochs == 3 and args.examples is None


def test_demo_trunk_takes_raw_images():
    trunk = demo.demo_trunk((32, 32, 3))
    assert trunk.output.shape == (None, 4, 4, 96)
    assert trunk.layers[1].name == "rescaling"
