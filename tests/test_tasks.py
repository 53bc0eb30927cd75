import keras
import numpy as np
import pytest

from keras_mtl import tasks


ALL = [
    tasks.Regression("age", units=2, loss="mae"),
    tasks.BinaryClassification("gender"),
    tasks.MulticlassClassification("ethnicity", num_classes=5, class_names=list("abcde")),
    tasks.MultilabelClassification("attrs", num_labels=3),
    tasks.Segmentation("seg", num_classes=4),
    tasks.DenseRegression("depth", channels=1),
]


@pytest.mark.parametrize("task", ALL, ids=lambda t: type(t).__name__)
def test_config_round_trip(task):
    config = keras.saving.serialize_keras_object(task)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(task)
    assert restored.get_config() == task.get_config()


@pytest.mark.parametrize("task", ALL, ids=lambda t: type(t).__name__)
def test_metrics_declare_direction(task):
    names = [m.name for m in task.metrics()]
    assert names and set(names) == set(task.higher_is_better)


def test_regression_missing_is_nan_anywhere_in_row():
    labels, missing, _, _ = ALL[0].prepare_labels(np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(np.asarray(missing), [False, True, False])
    assert not np.isnan(np.asarray(labels)).any()


def test_binary_minus_one_and_nan_are_missing_and_channel_added():
    labels, missing, _, _ = ALL[1].prepare_labels(np.array([1.0, -1.0, 0.0, np.nan]))
    assert tuple(labels.shape) == (4, 1)
    np.testing.assert_array_equal(np.asarray(missing), [False, True, False, True])


def test_multiclass_accepts_column_ids_and_marks_minus_one():
    labels, missing, _, _ = ALL[2].prepare_labels(np.array([[3], [-1], [0]]))
    assert tuple(labels.shape) == (3,) and keras.backend.standardize_dtype(labels.dtype) == "int32"
    np.testing.assert_array_equal(np.asarray(missing), [False, True, False])
    np.testing.assert_array_equal(np.asarray(labels), [3, 0, 0])


def test_segmentation_missing_per_pixel():
    y = np.zeros((1, 2, 2), "int32")
    y[0, 0, 1] = -1
    labels, missing, _, _ = ALL[4].prepare_labels(y)
    np.testing.assert_array_equal(np.asarray(missing), [[[False, True], [False, False]]])


def test_dense_regression_adds_channel_axis():
    labels, missing, _, _ = ALL[5].prepare_labels(np.ones((2, 4, 4), "float32"))
    assert tuple(labels.shape) == (2, 4, 4, 1) and tuple(missing.shape) == (2, 4, 4)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: tasks.MulticlassClassification("c", num_classes=1), "num_classes"),
        (lambda: tasks.Segmentation("s", num_classes=0), "num_classes"),
        (lambda: tasks.Regression("r", units=0), "units"),
        (lambda: tasks.Regression("bad name"), "`name`"),
        (lambda: tasks.Regression(""), "`name`"),
        (lambda: tasks.Regression("r", loss="no_such_loss"), "`loss`"),
        (lambda: tasks.MulticlassClassification("c", 3, class_names=["a"]), "class_names"),
        (lambda: tasks.MultilabelClassification("m", 2, label_names=["a"]), "label_names"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_check_tasks_rejects_empty_and_duplicates():
    with pytest.raises(ValueError, match="non-empty list"):
        tasks.check_tasks([])
    with pytest.raises(ValueError, match=r"duplicate names: \['a'\]"):
        tasks.check_tasks([tasks.Regression("a"), tasks.BinaryClassification("a")])
    with pytest.raises(ValueError, match="Task"):
        tasks.check_tasks(["age"])
