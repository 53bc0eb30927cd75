"""Smoke runs of the story examples, offline: tiny sizes, one epoch.

- `examples/shapes_dense.py` and `examples/digit_pairs.py` on the embedded
  data;
- `examples/utkface_hydranet.py` on a folder of JPEGs written here;
- `examples/cifar10_animal.py` on tensorflow-datasets' mock data.
"""

import numpy as np
import pytest
import tensorflow as tf

from conftest import load_example

# Long (each trains models): `make test-slow` runs them.
pytestmark = pytest.mark.slow


def test_shapes_dense_compares_methods_with_single_task_baselines(capsys):
    example = load_example("shapes_dense")
    results = example.main([
        "--quick", "--tasks", "shape,depth", "--methods", "mgda",
        "--examples", "32", "--test-examples", "16", "--batch-size", "16", "--verbose", "0",
    ])
    assert set(results["single_task"]) == {"shape", "depth"}
    assert results["single_task"]["depth"].keys() == {"mae", "rmse"}
    mgda = results["multi_task"]["mgda"]
    assert mgda["metrics"].keys() == {"shape", "depth"}
    assert np.isfinite(mgda["delta_m"])
    out = capsys.readouterr().out
    assert "| single-task (2 models) |" in out and "| mgda " in out
    assert f"{mgda['delta_m']:+.2f}" in out
    assert "3 models in" in out


@pytest.mark.slow
def test_shapes_dense_runs_every_default_method(capsys):
    example = load_example("shapes_dense")
    results = example.main(["--quick", "--verbose", "0"])
    assert list(results["multi_task"]) == ["equal", "uncertainty", "dwa", "pcgrad", "mgda"]
    assert set(results["single_task"]) == {"shape", "segmentation", "depth"}
    assert "8 models in" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "equal,gradnorm"], "argument --methods"),
        (["--tasks", "shape"], "at least 2 tasks"),
        (["--tasks", "shape,size"], "argument --tasks"),
    ],
)
def test_shapes_dense_bad_arguments_exit_2(argv, message, capsys):
    example = load_example("shapes_dense")
    with pytest.raises(SystemExit) as raised:
        example.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_digit_pairs_multi_task_vs_single_task(capsys):
    example = load_example("digit_pairs")
    results = example.main([
        "--quick", "--methods", "equal", "--examples", "64", "--test-examples", "32",
        "--batch-size", "32", "--verbose", "0",
    ])
    assert set(results["single_task"]) == {"left", "right"}
    assert results["multi_task"]["equal"]["metrics"]["left"].keys() == {"accuracy"}
    out = capsys.readouterr().out
    assert "| single-task (2 models) |" in out and "| equal " in out
    # The encoder ends in a vector: heads do not pool away where a digit is.
    assert example.multi_lenet((32, 32, 1)).output.shape == (None, 50)


def _write_utkface_folder(folder, n=24, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        age, gender, race = rng.integers(1, 90), rng.integers(0, 2), rng.integers(0, 5)
        image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        name = f"{age}_{gender}_{race}_2017011714515{i:04d}.jpg.chip.jpg"
        (folder / name).write_bytes(tf.io.encode_jpeg(image).numpy())
    # The public archive has names with a missing field: reported, not used.
    (folder / "39_1_20170116174525125.jpg.chip.jpg").write_bytes(b"x")


def test_utkface_hydranet_trains_on_a_folder(tmp_path, capsys):
    _write_utkface_folder(tmp_path)
    example = load_example("utkface_hydranet")
    with pytest.warns(UserWarning, match="UTKFace: skipped 1 of 25 files"):
        history = example.main([
            "--data_dir", str(tmp_path), "--quick", "--batch-size", "8", "--verbose", "0",
        ])
    keys = set(history.history)
    assert {"age_mae", "gender_accuracy", "ethnicity_accuracy",
            "val_age_mae", "val_gender_auc", "val_ethnicity_accuracy"} <= keys
    out = capsys.readouterr().out
    assert "UTKFace: 24 images" in out and "(20 training, 4 validation)" in out
    assert "1 file(s) skipped" in out and "expected 4 fields" in out
    rows = [line.split("|")[1:3] for line in out.splitlines() if line.startswith("| ")]
    assert [(task.strip(), metric.strip()) for task, metric in rows][1:] == [
        ("age", "mae"), ("age", "rmse"), ("gender", "accuracy"), ("gender", "auc"),
        ("ethnicity", "accuracy")]


def test_utkface_hydranet_rejects_an_unknown_weighting(tmp_path, capsys):
    example = load_example("utkface_hydranet")
    with pytest.raises(SystemExit) as raised:
        example.main(["--data-dir", str(tmp_path), "--weighting", "gradnrom"])
    assert raised.value.code == 2
    assert "argument --weighting" in capsys.readouterr().err


def test_utkface_hydranet_missing_folder_exits_2(tmp_path, capsys):
    example = load_example("utkface_hydranet")
    with pytest.raises(SystemExit) as raised:
        example.main(["--data-dir", str(tmp_path / "UTKFace"), "--quick"])
    assert raised.value.code == 2
    assert "Expected an existing folder of UTKFace images" in capsys.readouterr().err


def test_cifar10_animal_trains_offline_on_mock_data(capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    example = load_example("cifar10_animal")
    with tfds.testing.mock_data(num_examples=32):
        history, test = example.main(["--quick", "--batch-size", "16", "--verbose", "0",
                                      "--weighting", "uncertainty"])
    keys = set(history.history)
    assert {"label_accuracy", "animal_accuracy", "val_label_accuracy",
            "val_animal_auc", "weight_label", "weight_animal"} <= keys
    assert test.keys() == {"label", "animal"} and test["animal"].keys() == {"accuracy", "auc"}
    out = capsys.readouterr().out
    assert "Test split:" in out and "| animal | auc" in out


def test_architectures_compares_sharing_schemes_with_single_task_baselines(capsys):
    example = load_example("architectures")
    results = example.main([
        "--quick", "--architectures", "mmoe,cross_stitch", "--examples", "32",
        "--test-examples", "16", "--batch-size", "16", "--verbose", "0",
    ])
    assert set(results["single_task"]) == {"shape", "count", "size", "position"}
    assert set(results["multi_task"]) == {"mmoe", "cross_stitch"}
    stitched = results["multi_task"]["cross_stitch"]
    assert np.isfinite(stitched["delta_m"])
    # One trunk copy per task: about as many parameters as the 4 baselines.
    assert stitched["parameters"] > 3 * results["multi_task"]["mmoe"]["parameters"]
    out = capsys.readouterr().out
    assert "| mmoe " in out and f"{stitched['delta_m']:+.2f}" in out
    assert "6 models in" in out
