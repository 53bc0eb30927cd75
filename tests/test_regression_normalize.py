"""`Regression(normalize=(mean, std))`: the loss on standardised values, the
predictions (metrics, SavedModel outputs) in the labels' units."""

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks as T

from conftest import random_images, tiny_model


def test_normalization_ignores_missing_labels_and_constant_units():
    labels = np.array([[20.0, 5.0], [40.0, 5.0], [np.nan, 5.0], [30.0, np.nan]])
    mean, std = T.Regression.normalization(labels)
    assert mean == pytest.approx([30.0, 5.0])
    assert std == pytest.approx([np.std([20.0, 40.0, 30.0]), 1.0])  # constant unit: 1
    with pytest.raises(ValueError, match="at least one finite label"):
        T.Regression.normalization(np.array([[np.nan], [np.nan]]))


def test_the_loss_is_the_base_loss_of_standardised_values():
    # Hand-computed: labels 50 and 20, predictions 40 and 20, mean 30, std 10:
    # standardised errors 1 and 0, so MSE per example [1, 0] (= [100, 0] / 10²)
    # and MAE [1, 0] (= [10, 0] / 10).
    y, p = np.array([[50.0], [20.0]]), np.array([[40.0], [20.0]])
    for loss, expected in (("mse", [1.0, 0.0]), ("mae", [1.0, 0.0])):
        fn = T.Regression("age", loss=loss, normalize=(30.0, 10.0)).loss_fn()
        assert np.asarray(fn(y, p)) == pytest.approx(expected)
    plain = T.Regression("age").loss_fn()
    assert np.asarray(plain(y, p)) == pytest.approx([100.0, 0.0])


def test_predictions_metrics_and_export_are_in_the_labels_units(tmp_path):
    rng = np.random.default_rng(0)
    x = random_images(64) / 255.0
    ages = rng.normal(40.0, 15.0, (64, 1)).astype("float32")
    task = T.Regression("age", normalize=T.Regression.normalization(ages))
    model = tiny_model([task, T.BinaryClassification("b")])
    # The untrained head predicts about the mean: years, not 0.
    assert np.asarray(model.predict(x[:4], verbose=0)["age"]) == pytest.approx(40.0, abs=5.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    y = {"age": ages, "b": rng.integers(0, 2, (64, 1)).astype("float32")}
    logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    # The loss is O(1) (MSE / std²), the MAE in years.
    assert logs["age_loss"][-1] < 5.0 and logs["age_mae"][-1] > 3.0
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.tasks[0].normalize == task.normalize
    np.testing.assert_allclose(loaded.predict(x[:4], verbose=0)["age"],
                               model.predict(x[:4], verbose=0)["age"], rtol=1e-5)


@pytest.mark.parametrize("normalize, match", [
    ((30.0, 0.0), r"`normalize \(std\)`. Expected a finite number > 0.0"),
    ((30.0, -2.0), r"Received: normalize \(std\)=-2.0"),
    ((float("nan"), 1.0), r"`normalize \(mean\)`"),
    ((30.0,), r"Expected None or `\(mean, std\)`"),
    (([1.0, 2.0, 3.0], 1.0), r"a mean per unit \(2\)"),
    ("standard", r"Expected None or `\(mean, std\)`"),
])
def test_bad_normalize_is_refused(normalize, match):
    with pytest.raises(ValueError, match=match):
        T.Regression("position", units=2, normalize=normalize)


def test_numpy_values_are_accepted_and_the_config_is_plain():
    task = T.Regression("age", normalize=(np.float32(30.0), np.array([10.0])))
    assert task.normalize == ([30.0], [10.0])
    assert keras_mtl.tasks.Regression.from_config(task.get_config()).normalize == task.normalize
