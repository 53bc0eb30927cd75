"""Tests for `keras_mtl.weighting.InverseSize` and `count_labels`."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import tasks as T
from keras_mtl import weighting as W

from test_weighting_common import TASKS, built, call, tiny_model


def test_weights_by_hand():
    # 1/n = (1/100, 1/300, 1/600) = (6, 2, 1) / 600; w = 3 * (6, 2, 1) / 9.
    weighting = built(W.InverseSize(counts={"a": 100, "b": 300, "c": 600}), ["a", "b", "c"])
    total, weights = call(weighting, {"a": 1.0, "b": 2.0, "c": 4.0})
    assert weights == pytest.approx({"a": 2.0, "b": 2 / 3, "c": 1 / 3})
    assert sum(weights.values()) == pytest.approx(3.0)
    assert total == pytest.approx(2.0 + 4 / 3 + 4 / 3)


def test_equal_counts_give_equal_weighting():
    weighting = built(W.InverseSize(counts={"a": 7, "b": 7}))
    total, weights = call(weighting, {"a": 1.0, "b": 2.0})
    assert total == pytest.approx(3.0) and weights == pytest.approx({"a": 1.0, "b": 1.0})


def test_counts_are_required_at_compile():
    match = r"needs the number of labelled examples.*count_labels.*Received: counts=None"
    with pytest.raises(ValueError, match=match):
        tiny_model(W.get("inverse_size"))
    with pytest.raises(ValueError, match=r"Missing: \['b'\]"):
        tiny_model(W.InverseSize(counts={"a": 3}))


@pytest.mark.parametrize(
    "counts, match",
    [
        (
            {"a": 0, "b": 1},
            r"argument `counts\['a'\]`. Expected a number > 0.0. Received: counts\['a'\]=0",
        ),
        ({"a": -3, "b": 1}, r"counts\['a'\]=-3"),
        ([1, 2], r"Expected a dict"),
    ],
)
def test_bad_counts(counts, match):
    with pytest.raises(ValueError, match=match):
        W.InverseSize(counts=counts)


def test_count_labels_from_a_label_dict():
    labels = {
        "a": np.array([[1.0], [np.nan], [2.0], [3.0]], "float32"),
        "b": np.array([[1], [0], [-1], [-1]], "float32"),
    }
    assert W.count_labels(labels, TASKS) == {"a": 3, "b": 2}


def test_count_labels_from_a_dataset_with_sample_weights_and_dense_tasks():
    tasks = TASKS + [T.Segmentation("s", 3)]
    seg = np.zeros((4, 16, 16), "int32")
    seg[1] = -1  # no labelled pixel in example 1
    seg[2, :8] = -1  # half labelled: counts
    y = {
        "a": np.array([[1.0], [np.nan], [2.0], [3.0]], "float32"),
        "b": np.array([[1], [0], [1], [-1]], "float32"),
        "s": seg,
    }
    sample_weight = {"a": np.array([1.0, 1.0, 0.0, 1.0], "float32")}
    x = np.zeros((4, 16, 16, 3), "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y, sample_weight)).batch(3)
    assert W.count_labels(ds, tasks) == {"a": 2, "b": 3, "s": 3}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    assert W.count_labels(ds, tasks) == {"a": 3, "b": 3, "s": 3}


def test_count_labels_rejects_other_data():
    with pytest.raises(ValueError, match=r"task keys \['a', 'b'\]"):
        W.count_labels([(None, {"a": np.ones((2, 1))})], TASKS)
    with pytest.raises(ValueError, match=r"batches \(x, y\)"):
        W.count_labels([np.ones((2, 1))], TASKS)
