"""A weighting method defined outside the package (tests/custom_weighting.py)
is known everywhere by registering it: no edit anywhere else."""

import os
import sys

import keras
import keras_tuner
import numpy as np
import pytest

import custom_weighting
import keras_mtl
from keras_mtl import tasks as T
from keras_mtl import tuning

from conftest import random_images, random_labels, tiny_model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

TASKS = [T.Regression("a"), T.BinaryClassification("b")]


def data(n=16):
    return random_images(n) / 255.0, random_labels(TASKS, n)


def test_known_by_its_names():
    assert keras_mtl.weighting.get_class("loss_ema") is custom_weighting.LossEMA
    assert keras_mtl.weighting.get_class("LossEMA") is custom_weighting.LossEMA
    assert "loss_ema" in keras_mtl.weighting.methods("loss")
    assert "`loss_ema` (`LossEMA`)" in keras_mtl.weighting.markdown_table("loss")
    assert "loss_ema" not in keras_mtl.weighting.markdown_table("loss", package="keras_mtl")


def test_trains_by_name_and_round_trips(tmp_path):
    model = tiny_model(TASKS)
    model.compile(optimizer="adam", weighting="loss_ema")
    history = model.fit(*data(), batch_size=8, epochs=2, verbose=0)
    assert {"weight_a", "weight_b"} <= set(history.history)
    means = model.weighting.means.numpy()
    assert not np.allclose(means, 1.0), "its state did not update"
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(restored.weighting, custom_weighting.LossEMA)
    np.testing.assert_array_equal(restored.weighting.means.numpy(), means)


def test_its_search_space_is_tuned():
    hypermodel = tuning.MultiTaskHyperModel(
        TASKS, (16, 16, 3), backbones=("small_cnn",), weightings=("equal", "loss_ema"))
    hp = keras_tuner.HyperParameters()
    hp.values["weighting"] = "loss_ema"
    model = hypermodel.build(hp)
    assert isinstance(model.weighting, custom_weighting.LossEMA)
    decay = {p.name: p for p in hp.space}["loss_ema/decay"]
    assert (decay.min_value, decay.max_value) == (0.5, 0.99)
    hp.values["loss_ema/decay"] = 0.7
    assert hypermodel.build(hp).weighting.decay == 0.7


def test_it_is_in_the_benchmarks_method_lists():
    import bench_gradient_overhead  # noqa: F401 (its list is gradient-level only)
    import bench_quality
    import bench_weighting_overhead

    assert bench_quality.method_classes()["loss_ema"] is custom_weighting.LossEMA
    factories = bench_weighting_overhead.methods(TASKS, random_labels(TASKS, 4))
    assert isinstance(factories["LossEMA"](), custom_weighting.LossEMA)


@pytest.mark.slow
def test_resumes_after_a_kill_like_the_built_in_methods(tmp_path):
    import test_kill_resume as kr

    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted.mkdir()
    result = kr.child(uninterrupted, "loss_ema", module="custom_weighting")
    assert result.returncode == 0, result.stderr[-3000:]
    killed = tmp_path / "killed"
    killed.mkdir()
    runs = kr.kill_and_resume(killed, "loss_ema", module="custom_weighting")
    kr.check_resumed(killed, "loss_ema", uninterrupted, runs)
