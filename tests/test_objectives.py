"""Multi-task objectives (Δm, weighted score) logged as epoch metrics."""

import math

import keras
import keras_tuner
import numpy as np
import pytest

from keras_mtl import objectives
from keras_mtl import tasks as T
from keras_mtl import tuning
from keras_mtl.datasets import shapes

from conftest import tiny_model

TASKS = [T.MulticlassClassification("shape", num_classes=3), T.Regression("size")]


def _data(split, n, tasks=("shape", "size")):
    return shapes.load(split, n, 16, tasks=list(tasks), seed=0).batch(16)


# --- Δm -------------------------------------------------------------------------
def test_delta_m_hand_computed_from_logs():
    tasks = [T.Regression("age"), T.BinaryClassification("gender"), T.Regression("aux")]
    objective = objectives.DeltaM(
        tasks,
        baselines={"age": {"mae": 5.0, "rmse": 8.0}, "gender": {"accuracy": 0.8, "auc": 0.9}},
    )
    logs = {
        "val_age_mae": 4.0, "val_age_rmse": 10.0,           # -20 %, +25 %  -> +2.5 %
        "val_gender_accuracy": 0.88, "val_gender_auc": 0.9,  # -10 %, 0 %    -> -5 %
        "val_aux_mae": 123.0,                               # no baseline: not counted
    }
    objective.on_train_begin()
    objective.on_epoch_end(0, logs)
    assert logs["val_delta_m"] == pytest.approx((2.5 - 5.0) / 2)
    assert objective.key == "val_delta_m"
    assert objective.required_keys() == [
        "val_age_mae", "val_age_rmse", "val_gender_accuracy", "val_gender_auc"
    ]
    objective.on_train_end()  # logged once: no error


def test_val_delta_m_in_history_matches_hand_computation():
    baselines = {"shape": {"accuracy": 0.4}, "size": {"mae": 0.08, "rmse": 0.1}}
    delta = objectives.DeltaM(TASKS, baselines)
    # A callback after DeltaM sees the key in the same epoch (EarlyStopping
    # warns and skips when its monitor is missing).
    early = keras.callbacks.EarlyStopping(monitor="val_delta_m", patience=5, mode="min")
    model = tiny_model(TASKS)
    model.compile(optimizer="adam")
    history = model.fit(
        _data("train", 32), validation_data=_data("validation", 16), epochs=2,
        callbacks=[delta, early], verbose=0,
    ).history
    assert len(history["val_delta_m"]) == 2
    for epoch in range(2):
        accuracy = history["val_shape_accuracy"][epoch]
        mae, rmse = history["val_size_mae"][epoch], history["val_size_rmse"][epoch]
        shape_change = -(accuracy - 0.4) / 0.4
        size_change = ((mae - 0.08) / 0.08 + (rmse - 0.1) / 0.1) / 2
        expected = 100 * (shape_change + size_change) / 2
        assert history["val_delta_m"][epoch] == pytest.approx(expected, rel=1e-6)
    assert early.best == pytest.approx(min(history["val_delta_m"]))


def test_training_metrics_with_empty_prefix():
    objective = objectives.DeltaM(TASKS, {"shape": {"accuracy": 0.5}}, prefix="")
    logs = {"shape_accuracy": 0.75, "loss": 1.0}
    objective.on_epoch_end(0, logs)
    assert objective.key == "delta_m"
    assert logs["delta_m"] == pytest.approx(-50.0)


@pytest.mark.parametrize(
    "baselines, match",
    [
        ({}, "argument `baselines`.*non-empty dict"),
        ({"age": {"mae": 1.0}}, r"argument `baselines`.*Unknown keys: \['age'\]"),
        ({"size": {"accuracy": 1.0}}, r"metric names of task 'size' among \['mae', 'rmse'\]"),
        ({"size": {"mae": 0.0}}, r"argument `baselines\['size'\]\['mae'\]`.*non-zero"),
        ({"size": {"mae": float("nan")}}, r"baselines\['size'\]\['mae'\]"),
        ({"size": 0.1}, r"a dict \{metric: value\} for task 'size'"),
    ],
)
def test_delta_m_bad_baselines(baselines, match):
    with pytest.raises(ValueError, match=match):
        objectives.DeltaM(TASKS, baselines)


def test_missing_metric_names_the_logged_keys():
    objective = objectives.DeltaM(TASKS, {"size": {"mae": 0.1}})
    logged = r"Logged keys: \['loss', 'val_loss', 'val_size_rmse'\]"
    with pytest.raises(objectives.ObjectiveError, match=r"needs \['val_size_mae'\].*" + logged):
        objective.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0, "val_size_rmse": 0.2})


def test_epoch_without_validation_is_skipped_and_never_logged_is_an_error():
    objective = objectives.DeltaM(TASKS, {"size": {"mae": 0.1}})
    objective.on_train_begin()
    logs = {"loss": 1.0, "size_mae": 0.2}
    objective.on_epoch_end(0, logs)  # validation_freq > 1: nothing to read yet
    assert "val_delta_m" not in logs
    with pytest.raises(objectives.ObjectiveError, match="never logged.*validation_data"):
        objective.on_train_end()


def test_fit_without_validation_data_fails_at_train_end():
    model = tiny_model(TASKS)
    model.compile(optimizer="adam")
    with pytest.raises(objectives.ObjectiveError, match="`val_delta_m`.*never logged"):
        model.fit(_data("train", 16), epochs=1, verbose=0,
                  callbacks=[objectives.DeltaM(TASKS, {"size": {"mae": 0.1}})])


# --- weighted score ---------------------------------------------------------------
def test_weighted_score_hand_computed():
    tasks = [T.Regression("age"), T.BinaryClassification("gender"),
             T.MulticlassClassification("kind", num_classes=4)]
    objective = objectives.WeightedScore(
        tasks, weights={"age": 2.0, "gender": 1.0, "kind": 0.0},
        scales={"age": 10.0}, metrics={"gender": ["accuracy"]})
    logs = {"val_age_mae": 4.0, "val_age_rmse": 6.0, "val_gender_accuracy": 0.75,
            "val_gender_auc": 0.1, "val_kind_accuracy": 0.0}
    objective.on_epoch_end(0, logs)
    age = (4.0 / 10.0 + 6.0 / 10.0) / 2        # 0.5
    gender = 1 - 0.75                           # auc left out by `metrics`
    assert logs["val_weighted_score"] == pytest.approx((2 * age + 1 * gender) / 3)
    # weight 0: "kind" is not even read.
    assert "val_kind_accuracy" not in objective.required_keys()


def test_weighted_score_default_weights_and_per_metric_scales():
    objective = objectives.WeightedScore(TASKS, scales={"size": {"mae": 0.2, "rmse": 0.4}})
    logs = {"val_shape_accuracy": 0.6, "val_size_mae": 0.1, "val_size_rmse": 0.1}
    objective.on_epoch_end(0, logs)
    assert logs["val_weighted_score"] == pytest.approx((0.4 + (0.5 + 0.25) / 2) / 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scales": None}, r"argument `scales`.*\{'size': \['mae', 'rmse'\]\}.*label_scales"),
        ({"scales": {"size": {"mae": 1.0}}}, r"Missing: \['rmse'\]"),
        ({"scales": {"size": -1.0}}, r"positive scales"),
        ({"scales": {"size": 1.0, "age": 1.0}}, r"unknown tasks: \['age'\]"),
        ({"weights": {"shape": -1.0}, "scales": {"size": 1.0}}, r"argument `weights\['shape'\]`"),
        ({"weights": {"shape": 0.0}}, "at least one positive weight"),
        ({"weights": {"shape": 1.0}, "metrics": {"shape": ["auc"]}}, r"among \['accuracy'\]"),
    ],
)
def test_weighted_score_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        objectives.WeightedScore(TASKS, **kwargs)


def test_label_scales_are_the_errors_of_predicting_the_mean():
    tasks = [T.MulticlassClassification("shape", num_classes=3), T.Regression("size"),
             T.Regression("position", units=2), T.DenseRegression("depth")]
    ds = shapes.load("train", 40, 16, tasks=["shape", "size", "position", "depth"])
    _, labels = shapes.generate("train", 40, 16, tasks=["shape", "size", "position", "depth"])
    for data in (ds.batch(16), ds):  # batched and unbatched
        scales = objectives.label_scales(data, tasks)
        assert set(scales) == {"size", "position", "depth"}
        for name in scales:
            channels = next(t for t in tasks if t.name == name).output_channels
            values = labels[name].reshape(-1, channels)
            deviation = values - values.mean(axis=0)
            assert scales[name]["mae"] == pytest.approx(np.abs(deviation).mean(), rel=1e-5)
            assert scales[name]["rmse"] == pytest.approx(np.sqrt((deviation**2).mean()), rel=1e-5)


def test_label_scales_skip_missing_labels_and_refuse_bad_data():
    scales = objectives.label_scales({"size": np.array([1.0, np.nan, 3.0])}, [T.Regression("size")])
    assert scales == {"size": {"mae": 1.0, "rmse": 1.0}}
    with pytest.raises(ValueError, match="at least 2"):
        objectives.label_scales({"size": np.array([1.0, np.nan])}, [T.Regression("size")])
    with pytest.raises(ValueError, match="all its labels are equal"):
        objectives.label_scales({"size": np.ones(4)}, [T.Regression("size")])
    with pytest.raises(ValueError, match=r"labels for task 'size'.*\['shape'\]"):
        objectives.label_scales({"shape": np.zeros(4)}, [T.Regression("size")])
    with pytest.raises(ValueError, match="argument `data`"):
        objectives.label_scales([np.zeros(3)], [T.Regression("size")])


# --- RequireLogged, serialisation ---------------------------------------------------
def test_require_logged():
    check = objectives.RequireLogged(["val_delta_m", "loss"], what="The monitor")
    check.on_train_begin()
    check.on_epoch_end(0, {"loss": 1.0})  # no validation ran: val_ keys not due
    check.on_epoch_end(1, {"loss": 1.0, "val_loss": 1.0, "val_delta_m": 3.0})
    check.on_train_end()
    with pytest.raises(objectives.ObjectiveError, match=r"The monitor needs \['loss'\]"):
        check.on_epoch_end(2, {"val_delta_m": 1.0})
    never = objectives.RequireLogged("val_x")
    never.on_train_begin()
    never.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(objectives.ObjectiveError, match=r"\['val_x'\], which no epoch logged"):
        never.on_train_end()
    with pytest.raises(ValueError, match="argument `keys`"):
        objectives.RequireLogged([])


@pytest.mark.parametrize(
    "objective",
    [
        objectives.DeltaM(TASKS, {"shape": {"accuracy": 0.5}}, prefix="", name="dm"),
        objectives.WeightedScore(TASKS, weights={"shape": 1.0, "size": 2.0},
                                 scales={"size": 0.5}, metrics={"size": ["mae"]}),
        objectives.RequireLogged(["val_delta_m"], what="x"),
    ],
)
def test_serialization_round_trip(objective):
    config = keras.saving.serialize_keras_object(objective)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(objective)
    assert restored.get_config() == objective.get_config()


def test_bad_prefix_and_name():
    with pytest.raises(ValueError, match="argument `prefix`"):
        objectives.DeltaM(TASKS, {"size": {"mae": 1.0}}, prefix=None)
    with pytest.raises(ValueError, match="argument `name`"):
        objectives.DeltaM(TASKS, {"size": {"mae": 1.0}}, name="")


# --- with KerasTuner ---------------------------------------------------------------------
class _EagerHyperModel(tuning.MultiTaskHyperModel):
    # Eager steps: tracing costs more than a few tiny batches.
    def compile_model(self, hp, model):
        model.compile(optimizer=self.build_optimizer(hp),
                      weighting=self.build_weighting(hp), run_eagerly=True)


def _hypermodel(objective_list):
    return _EagerHyperModel(TASKS, (16, 16, 3), backbones=("small_cnn",),
                            weightings=("equal",), head_units=(8,),
                            branch_points=(1.0,), objectives=objective_list)


def _search(tmp_path, hypermodel, objective, **search_kwargs):
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=objective, max_trials=2, seed=0,
        directory=str(tmp_path), project_name="search", overwrite=True)
    search_kwargs.setdefault("validation_data", _data("validation", 16))
    tuner.search(_data("train", 16), epochs=1, verbose=0, **search_kwargs)
    return tuner


@pytest.mark.slow  # long: `make test-slow` runs it
def test_tuner_objective_never_logged_stops_the_search(tmp_path):
    hypermodel = _hypermodel([objectives.DeltaM(TASKS, {"shape": {"accuracy": 0.5}})])
    with pytest.raises(keras_tuner.errors.FatalValueError) as info:
        _search(tmp_path, hypermodel, keras_tuner.Objective("val_delta", "min"))
    message = str(info.value)
    assert "The tuner objective needs ['val_delta']" in message
    assert "'val_delta_m'" in message and "'val_shape_accuracy'" in message  # logged keys
    assert isinstance(info.value, ValueError)


@pytest.mark.slow  # long: `make test-slow` runs it
def test_tuner_objective_without_its_callback(tmp_path):
    with pytest.raises(keras_tuner.errors.FatalValueError,
                       match=r"needs \['val_delta_m'\].*callbacks of this hypermodel log \[\]"):
        _search(tmp_path, _hypermodel([]), keras_tuner.Objective("val_delta_m", "min"))


@pytest.mark.slow  # long: `make test-slow` runs it
def test_search_without_validation_data_fails_before_training(tmp_path):
    hypermodel = _hypermodel([objectives.DeltaM(TASKS, {"shape": {"accuracy": 0.5}})])
    with pytest.raises(keras_tuner.errors.FatalValueError, match="pass `validation_data`"):
        _search(tmp_path, hypermodel, keras_tuner.Objective("val_delta_m", "min"),
                validation_data=None)


@pytest.mark.slow  # long: `make test-slow` runs it
def test_weighted_score_as_tuner_objective(tmp_path):
    scales = objectives.label_scales(_data("train", 16), TASKS)
    hypermodel = _hypermodel([objectives.WeightedScore(TASKS, scales=scales)])
    tuner = _search(tmp_path, hypermodel, keras_tuner.Objective("val_weighted_score", "min"))
    for trial in tuner.oracle.trials.values():
        m = trial.metrics
        accuracy = m.get_last_value("val_shape_accuracy")
        size = (m.get_last_value("val_size_mae") / scales["size"]["mae"]
                + m.get_last_value("val_size_rmse") / scales["size"]["rmse"]) / 2
        assert trial.score == pytest.approx(((1 - accuracy) + size) / 2, rel=1e-5)
        assert math.isfinite(trial.score)
