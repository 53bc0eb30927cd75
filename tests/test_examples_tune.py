"""`examples/tune_hydranet.py` runs offline (`--quick`)."""

import math

import pytest

from conftest import load_example


@pytest.mark.slow  # long: `make test-slow` runs it
def test_quick_bayesian_search(tmp_path, capsys):
    example = load_example("tune_hydranet")
    result = example.main(["--quick", "--tuner", "bayesian", "--directory", str(tmp_path),
                           "--verbose", "0"])
    out = capsys.readouterr().out
    trials = [t for t in result["tuner"].oracle.trials.values() if t.status == "COMPLETED"]
    assert len(trials) == 2
    # Baselines for every metric of every task, from the single-task models.
    assert set(result["baselines"]) == {"shape", "count", "size"}
    assert set(result["baselines"]["count"]) == {"mae", "rmse"}
    assert math.isfinite(result["test_delta_m"])
    assert "bayesian search, 2 completed trials" in out
    assert out.count("| small_cnn |") == 2
    assert "test Δm vs single-task baselines" in out
    best = result["best_hyperparameters"].values
    assert best["backbone"] == "small_cnn" and best["weighting"] in ("equal", "dwa")


@pytest.mark.parametrize("tuner, cls", [("random", "RandomSearch"), ("hyperband", "Hyperband")])
def test_the_other_tuners(tuner, cls, tmp_path):
    # Their searches run the same hypermodel code as above (and each runs a
    # real search in test_tuning.py); here: the flags reach KerasTuner.
    from keras_mtl import tuning

    example = load_example("tune_hydranet")
    args = example.parse_args(["--tuner", tuner, "--epochs", "3", "--trials", "2",
                               "--directory", str(tmp_path)])
    hypermodel = tuning.MultiTaskHyperModel(
        example.make_tasks(), (16, 16, 3), backbones=("small_cnn",), weightings=("equal",))
    built = example.make_tuner(hypermodel, args)
    assert type(built).__name__ == cls
    assert built.oracle.objective.name == "val_delta_m"
    assert built.oracle.objective.direction == "min"
    if tuner == "hyperband":
        assert built.oracle.max_epochs == 3
    else:
        assert built.oracle.max_trials == 2
