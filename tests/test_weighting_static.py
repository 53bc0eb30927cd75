"""Tests for `keras_mtl.weighting.Static` and `keras_mtl.callbacks.LossWeightScheduler`."""

import keras
import numpy as np
import pytest

from keras_mtl import weighting as W
from keras_mtl.callbacks import LossWeightScheduler

from test_weighting_common import built, call, data, fit, tiny_model


def test_weighted_sum_by_hand():
    weighting = built(W.Static({"a": 0.5, "b": 3.0}))
    total, weights = call(weighting, {"a": 2.0, "b": 0.25})
    assert total == pytest.approx(0.5 * 2.0 + 3.0 * 0.25)
    assert weights == {"a": 0.5, "b": 3.0}


def test_default_is_one_per_task_and_weights_are_variables():
    weighting = built(W.Static())
    assert weighting.task_weights() == {"a": 1.0, "b": 1.0}
    assert [v.name for v in weighting.non_trainable_variables] == ["task_weights"]
    weighting.set_task_weights({"a": 0.0})
    assert call(weighting, {"a": 5.0, "b": 2.0})[0] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "weights, match",
    [
        ([1.0, 2.0], r"Expected a dict \{task: weight\}. Received: weights=\[1.0, 2.0\]"),
        (
            {"a": -1.0, "b": 1.0},
            r"argument `weights\['a'\]`. Expected a float >= 0.0. Received: weights\['a'\]=-1.0",
        ),
        ({"a": float("nan"), "b": 1.0}, r"weights\['a'\]=nan"),
        ({"a": "1", "b": 1.0}, r"weights\['a'\]='1'"),
    ],
)
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        W.Static(weights)


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"a": 1.0}, r"a value for every task \['a', 'b'\]. Missing: \['b'\]; unknown: \[\]"),
        ({"a": 1.0, "b": 1.0, "c": 1.0}, r"Missing: \[\]; unknown: \['c'\]"),
    ],
)
def test_missing_or_unknown_tasks_fail_at_compile(weights, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(W.Static(weights))


def test_set_task_weights_validates():
    weighting = built(W.Static())
    with pytest.raises(ValueError, match=r"unknown: \['c'\]"):
        weighting.set_task_weights({"c": 1.0})
    with pytest.raises(ValueError, match=r"weights\['a'\]=-2"):
        weighting.set_task_weights({"a": -2})
    assert weighting.task_weights() == {"a": 1.0, "b": 1.0}


def test_scheduler_changes_the_weights_each_epoch():
    # test_weighting_common checks the same in a traced train step.
    model = tiny_model(W.Static({"a": 1.0, "b": 0.0}), run_eagerly=True)
    seen = []

    def schedule(epoch, weights):
        seen.append(weights)
        return {"b": float(epoch)}

    x, y = data(missing_b_in_first_batch=False)
    history = fit(model, x, y, epochs=3, callbacks=[LossWeightScheduler(schedule)]).history
    assert history["weight_b"] == pytest.approx([0.0, 1.0, 2.0])
    assert history["weight_a"] == pytest.approx([1.0, 1.0, 1.0])
    assert seen == [{"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 1.0}]
    # The scheduled weights enter the loss: loss = 1 * a_loss + 2 * b_loss.
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["a_loss"] + 2.0 * logs["b_loss"], rel=1e-5)


@pytest.mark.parametrize(
    "returned, match",
    [
        ([0.5, 0.5], r"must return a dict \{task: weight\}. Received at epoch 0: \[0.5, 0.5\]"),
        ({"c": 1.0}, r"unknown tasks: \['c'\]"),
        ({"a": -1.0}, r"invalid weights: \['a'\]"),
        ({"a": float("inf")}, r"invalid weights: \['a'\]"),
    ],
)
def test_scheduler_validates_the_schedule_output(returned, match):
    model = tiny_model(W.Static())
    x, y = data()
    scheduler = LossWeightScheduler(lambda epoch, weights: returned)
    scheduler.set_model(model)
    with pytest.raises(ValueError, match=match):
        scheduler.on_epoch_begin(0)
    assert model.weighting.task_weights() == {"a": 1.0, "b": 1.0}


def test_scheduler_needs_a_settable_weighting():
    with pytest.raises(ValueError, match="Expected a function"):
        LossWeightScheduler(schedule=0.5)
    scheduler = LossWeightScheduler(lambda epoch, weights: weights)
    scheduler.set_model(tiny_model(W.DynamicWeightAverage()))
    with pytest.raises(ValueError, match=r"weighting whose weights can be set.*Static"):
        scheduler.on_train_begin()


# Saved before any training step, the optimizer has no slots yet; load_model
# builds them and warns that it skips the saved (empty) ones.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_scheduled_weights_survive_save_and_load(tmp_path):
    model = tiny_model(W.Static({"a": 1.0, "b": 1.0}))
    model.weighting.set_task_weights({"b": 0.25})
    path = str(tmp_path / "static.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.weighting.task_weights() == {"a": 1.0, "b": 0.25}
    # The config keeps the constructor's weights; the variable the current ones.
    assert restored.weighting.get_config()["weights"] == {"a": 1.0, "b": 1.0}
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored.weighting.weights_variable), [1.0, 0.25]
    )
