"""`MultiTaskHyperModel`: search space, branch points, and real KerasTuner searches."""

import keras
import keras_tuner
import numpy as np
import pytest

import keras_mtl
from keras_mtl import objectives
from keras_mtl import tasks as T
from keras_mtl import tuning
from keras_mtl import weighting as W
from keras_mtl.datasets import shapes

TASKS = [T.MulticlassClassification("shape", num_classes=3), T.Regression("size")]
BASELINES = {"shape": {"accuracy": 0.5}, "size": {"mae": 0.1}}
SHAPE = (16, 16, 3)


class EagerHyperModel(tuning.MultiTaskHyperModel):
    """The compile hook overridden: eager steps are faster than tracing for
    a few tiny batches."""

    def compile_model(self, hp, model):
        model.compile(optimizer=self.build_optimizer(hp),
                      weighting=self.build_weighting(hp), run_eagerly=True)


def _hypermodel(cls=tuning.MultiTaskHyperModel, **kwargs):
    kwargs.setdefault("backbones", ("small_cnn",))
    kwargs.setdefault("head_units", (8, 16))
    return cls(TASKS, SHAPE, **kwargs)


def _data(split, n):
    return shapes.load(split, n, 16, tasks=["shape", "size"], seed=0).batch(16)


def _build(hypermodel, **values):
    """Builds with some hyperparameters set (the others at their defaults)."""
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return hypermodel.build(hp), hp


# --- the search space --------------------------------------------------------------
def test_every_hyperparameter_has_a_default():
    hypermodel = _hypermodel(
        backbones=("small_cnn", "MobileNetV3Small"), weightings=("uncertainty", "equal"),
        branch_points=(1.0, 0.5), head_units=(32, 8), head_depths=(2, 1),
        dropout_range=(0.1, 0.4), learning_rate_range=(1e-4, 1e-2))
    model, hp = _build(hypermodel)
    assert hp.values == {
        "backbone": "small_cnn", "shared_fraction": 1.0, "head_depth": 2,
        "head_units": 32, "dropout": 0.1, "learning_rate": 1e-3, "weighting": "uncertainty",
    }
    assert [p.name for p in hp.space] == [
        "backbone", "shared_fraction", "head_depth", "head_units", "dropout",
        "learning_rate", "weighting",
    ]
    # Numeric choices are sorted (KerasTuner treats them as ordered).
    assert hp.space[2].values == [1, 2] and hp.space[3].values == [8, 32]
    assert isinstance(model, keras_mtl.MultiTaskModel) and model.compiled
    assert isinstance(model.weighting, W.Uncertainty)
    assert model.weighting.task_kinds == {"shape": "classification", "size": "regression"}
    assert model.head_units == (32, 32) and model.dropout == pytest.approx(0.1)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_single_values_and_point_ranges_are_fixed():
    hypermodel = _hypermodel(head_units=(8,), dropout_range=(0.2, 0.2),
                             learning_rate_range=(0.01, 0.01), weightings=("equal",))
    _, hp = _build(hypermodel)
    assert type(hp.space[4]).__name__ == "Fixed" and hp.values["dropout"] == 0.2
    assert hp.values["learning_rate"] == 0.01  # default 1e-3 clipped into the range


def test_weighting_hyperparameters_live_in_conditional_scopes():
    names = ("dwa", "cagrad", "nash_mtl", "grad_norm", "famo", "static", "mgda",
             "aligned_mtl", "grad_vac", "grad_drop", "pcgrad", "equal", "uncertainty")
    hypermodel = _hypermodel(weightings=names)
    _, hp = _build(hypermodel, weighting="cagrad")
    conditional = {p.name: p.conditions for p in hp.space if p.conditions}
    assert sorted(conditional) == sorted([
        "dwa/temperature", "cagrad/c", "cagrad/mode", "nash_mtl/update_every",
        "nash_mtl/mode", "grad_norm/alpha", "grad_norm/mode", "famo/learning_rate",
        "famo/weight_decay", "static/weight_shape", "static/weight_size",
        "mgda/normalization", "mgda/mode", "aligned_mtl/scale", "aligned_mtl/mode",
        "grad_vac/beta", "grad_vac/mode", "grad_drop/leak", "pcgrad/mode",
    ])
    for name, conditions in conditional.items():
        (condition,) = conditions
        assert condition.name == "weighting" and condition.values == [name.split("/")[0]]
    active = {p.name for p in hp.space if p.conditions and hp.is_active(p)}
    assert active == {"cagrad/c", "cagrad/mode"}
    assert hp.values["cagrad/c"] == pytest.approx(0.4)           # CAGrad's own default
    assert hp.values["cagrad/mode"] == "params"
    assert "dwa/temperature" not in hp.values                    # inactive
    # The methods' defaults are their constructors' defaults.
    defaults = {p.name: p.default for p in hp.space if p.conditions}
    assert defaults["dwa/temperature"] == 2.0 and defaults["grad_norm/alpha"] == 1.5
    assert defaults["grad_norm/mode"] == "representation" and defaults["nash_mtl/update_every"] == 1


@pytest.mark.parametrize(
    "values, cls, attributes",
    [
        ({"weighting": "dwa", "dwa/temperature": 3.5}, W.DynamicWeightAverage,
         {"temperature": 3.5}),
        ({"weighting": "cagrad", "cagrad/c": 0.7, "cagrad/mode": "representation"},
         W.CAGrad, {"c": 0.7, "mode": "representation"}),
        ({"weighting": "nash_mtl", "nash_mtl/update_every": 5}, W.NashMTL, {"update_every": 5}),
        ({"weighting": "grad_norm", "grad_norm/alpha": 0.5}, W.GradNorm, {"alpha": 0.5}),
        ({"weighting": "static", "static/weight_shape": 2.0, "static/weight_size": 0.5},
         W.Static, {"static_weights": {"shape": 2.0, "size": 0.5}}),
    ],
)
def test_tuned_values_reach_the_weighting_method(values, cls, attributes):
    hypermodel = _hypermodel(
        weightings=("equal", "dwa", "cagrad", "nash_mtl", "grad_norm", "static"))
    model, _ = _build(hypermodel, **values)
    assert type(model.weighting) is cls
    for name, value in attributes.items():
        assert getattr(model.weighting, name) == value


def test_weighting_kwargs_are_fixed_and_not_searched():
    with pytest.raises(ValueError, match=r"weighting_kwargs.*'inverse_size'.*counts"):
        _hypermodel(weightings=("equal", "inverse_size"))
    hypermodel = _hypermodel(
        weightings=("inverse_size", "dwa", "pcgrad"),
        weighting_kwargs={"inverse_size": {"counts": {"shape": 10, "size": 30}},
                          "dwa": {"temperature": 4.0}, "pcgrad": {"seed": 3}})
    model, hp = _build(hypermodel, weighting="dwa")
    assert model.weighting.temperature == 4.0
    assert "dwa/temperature" not in [p.name for p in hp.space]
    model, _ = _build(hypermodel, weighting="pcgrad")
    assert model.weighting.seed == 3
    with pytest.raises(ValueError,
                       match=r"weighting_kwargs\['dwa'\]=\{'temperature': -1\}.*temperature"):
        _hypermodel(weightings=("dwa",), weighting_kwargs={"dwa": {"temperature": -1}})
    with pytest.raises(ValueError, match=r"keys among `weightings`.*\['cagrad'\]"):
        _hypermodel(weightings=("dwa",), weighting_kwargs={"cagrad": {}})


def test_heads_without_hidden_layers():
    hypermodel = _hypermodel(head_depths=(0, 2), weightings=("equal",))
    model, hp = _build(hypermodel)
    assert model.head_units == () and "head_units" not in hp.values
    units = next(p for p in hp.space if p.name == "head_units")
    assert units.conditions[0].name == "head_depth" and units.conditions[0].values == [2]
    model, hp = _build(hypermodel, head_depth=2, head_units=16)
    assert model.head_units == (16, 16)


# --- branch points ----------------------------------------------------------------
def _residual_model():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stem")(inputs)
    y = keras.layers.Conv2D(4, 3, padding="same", name="inner")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="head_conv")(x)
    return keras.Model(inputs, x, name="residual")


def test_cut_points_never_split_a_residual_block():
    model = _residual_model()
    assert [name for _, name in tuning.cut_points(model)] == ["stem", "add", "head_conv"]
    trunk = tuning.cut_backbone(model, 0.5)  # 5 operations: cut at index <= 2 -> "stem"
    assert trunk.output.shape == (None, 8, 8, 4) and len(trunk.layers) == 2
    trunk = tuning.cut_backbone(model, 0.75)  # index <= 3 -> "add" (not "inner")
    assert [layer.name for layer in trunk.layers][-1] == "add"
    x = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype("float32")
    expected = keras.Model(model.input, model.get_layer("add").output)(x)
    np.testing.assert_allclose(trunk(x), expected, rtol=1e-6)  # shares the weights
    assert tuning.cut_backbone(model, 1.0) is model
    assert tuning.cut_backbone(model, 0.01).output.shape == (None, 8, 8, 4)  # first point


def test_cut_points_of_sequential_and_subclassed_models():
    sequential = keras.Sequential([
        keras.Input(SHAPE), keras.layers.Conv2D(4, 3, strides=2, name="a"),
        keras.layers.ReLU(name="relu"), keras.layers.Conv2D(4, 3, name="b"),
    ])
    assert [n for _, n in tuning.cut_points(sequential)] == ["a", "relu", "b"]
    assert tuning.cut_backbone(sequential, 0.5).output.shape == sequential.layers[0].output.shape

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    assert tuning.cut_points(Subclassed()) == []
    with pytest.raises(keras_tuner.errors.FatalValueError,
                       match=r"no cut point.*branch_points=\(1.0,\)"):
        tuning.cut_backbone(Subclassed(), 0.5)


def test_branching_a_keras_application_keeps_its_preprocessing():
    hypermodel = tuning.MultiTaskHyperModel(
        TASKS, (32, 32, 3), backbones=("MobileNetV3Small",), weightings=("equal",),
        branch_points=(0.5, 1.0), head_units=(8,))
    half, _ = _build(hypermodel)
    full, _ = _build(hypermodel, shared_fraction=1.0)
    full_ops = len(full.trunk.operations)
    assert len(half.trunk.operations) < 0.6 * full_ops
    assert len(half.trunk.output.shape) == 4
    assert half.preprocessing == full.preprocessing == "none"  # MobileNetV3 rescales inside
    outputs = half(np.zeros((2, 32, 32, 3), "float32"))
    assert outputs["shape"].shape == (2, 3) and outputs["size"].shape == (2, 1)


def test_factory_backbones():
    def tiny(input_shape):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=4, name="c")(inputs))

    hypermodel = _hypermodel(backbones={"tiny": tiny, "cnn": "small_cnn"}, weightings=("equal",))
    model, hp = _build(hypermodel)
    assert hp.values["backbone"] == "tiny" and model.trunk.output.shape == (None, 4, 4, 4)
    model, hp = _build(_hypermodel(backbones=(tiny,), weightings=("equal",)))
    assert hp.values["backbone"] == "tiny" and model.trunk.get_layer("c") is not None
    broken = _hypermodel(backbones={"broken": lambda shape: "not a model"}, weightings=("equal",))
    with pytest.raises(keras_tuner.errors.FatalValueError,
                       match="factory 'broken' to return a keras.Model"):
        _build(broken)
    # A backbone that cannot take the input shape stops the search (every
    # trial choosing it would fail).
    wrong = _hypermodel(backbones={"wrong": lambda shape: tiny((32, 32, 3))}, weightings=("equal",))
    with pytest.raises(keras_tuner.errors.FatalValueError,
                       match="Backbone 'wrong' cannot be built.*input_shape"):
        _build(wrong)


@pytest.mark.slow  # a real search: `make test-slow`
def test_static_weights_searched_over_a_trunk_with_several_inputs(tmp_path):
    # A graph / text trunk fixes its own inputs: no input shape; the tuned
    # static weights (the baseline scalarisation papers ask for) are searched.
    def molecules(_):
        atoms, positions = keras.Input((5,), dtype="int32", name="atoms"), keras.Input(
            (5, 3), name="positions")
        x = keras.layers.Concatenate()([keras.layers.Embedding(4, 4)(atoms), positions])
        z = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(8)(x))
        return keras.Model({"atoms": atoms, "positions": positions}, z)

    tasks = [T.Regression("u0"), T.Regression("homo")]
    hypermodel = tuning.MultiTaskHyperModel(
        tasks, None, backbones={"graph": molecules}, weightings=("static",),
        branch_points=(1.0,), head_units=(8,), head_depths=(1,))
    rng = np.random.default_rng(0)
    x = {"atoms": rng.integers(0, 4, (32, 5)), "positions": rng.normal(size=(32, 5, 3))}
    y = {"u0": rng.normal(size=(32, 1)), "homo": rng.normal(size=(32, 1))}
    tuner = keras_tuner.RandomSearch(hypermodel, objective="val_loss", max_trials=2,
                                     directory=str(tmp_path), seed=0)
    tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=16, verbose=0)
    best = tuner.get_best_hyperparameters()[0].values
    assert {"static/weight_u0", "static/weight_homo"} <= set(best)
    with pytest.raises(keras_tuner.errors.FatalValueError, match="'cnn' cannot be built"):
        _build(tuning.MultiTaskHyperModel(tasks, None, backbones={"cnn": "small_cnn"}))


# --- bad arguments -------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": []}, "argument `tasks`"),
        ({"input_shape": (16, 16)}, "argument `input_shape`"),
        ({"backbones": ()}, "argument `backbones`.*non-empty"),
        ({"backbones": ("MobileNetV3Smal",)},
         r"argument `backbones`.*Did you mean \['MobileNetV3Small'"),
        ({"backbones": (3,)}, "argument `backbones`"),
        ({"backbones": ("small_cnn", "small_cnn")}, "argument `backbones`.*distinct"),
        ({"weightings": ("equal", "nope")},
         r"argument `weightings`.*keras_mtl.weighting.names\(\)"),
        ({"weightings": ("dwa", "dynamic_weight_average")},
         "'dwa' and 'dynamic_weight_average' name the same method"),
        ({"weightings": "equal"}, "argument `weightings`.*list or tuple"),
        ({"branch_points": (0.0,)}, r"argument `branch_points`.*\(0, 1\]"),
        ({"branch_points": (1.5,)}, r"argument `branch_points`"),
        ({"head_units": (0,)}, "argument `head_units`.*integers >= 1"),
        ({"head_depths": (-1,)}, "argument `head_depths`.*integers >= 0"),
        ({"head_units": (8, 8)}, "argument `head_units`.*distinct"),
        ({"dropout_range": (0.5, 0.1)}, "argument `dropout_range`.*min <= max"),
        ({"dropout_range": (0.0, 1.0)}, r"argument `dropout_range`.*\[0.0, 1.0\)"),
        ({"learning_rate_range": (0.0, 0.1)}, "argument `learning_rate_range`"),
        ({"objectives": ["val_delta_m"]}, "argument `objectives`.*DeltaM"),
        ({"objectives": [objectives.DeltaM([T.Regression("age")], {"age": {"mae": 1.0}})]},
         r"argument `objectives`.*tasks \['age'\]"),
        ({"objectives": [objectives.DeltaM(TASKS, BASELINES), objectives.DeltaM(TASKS, BASELINES)]},
         r"several objectives log \['val_delta_m'\]"),
        ({"weights": "weights.h5"}, "argument `weights`"),
        ({"trainable_backbone": "yes"}, "argument `trainable_backbone`"),
        ({"weighting_kwargs": {"dwa": 2.0}}, "argument `weighting_kwargs`"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"tasks": TASKS, "input_shape": SHAPE, "backbones": ("small_cnn",),
                 "weightings": ("equal", "dwa"), **kwargs}
    with pytest.raises(ValueError, match=match):
        tuning.MultiTaskHyperModel(**arguments)


def test_get_config_lists_the_arguments():
    config = _hypermodel(weightings=("dwa",)).get_config()
    assert config["weightings"] == ("dwa",) and config["backbones"] == {"small_cnn": "small_cnn"}
    tasks = [keras.saving.deserialize_keras_object(t) for t in config["tasks"]]
    assert [t.name for t in tasks] == ["shape", "size"]


# --- fit ------------------------------------------------------------------------------
class _TunerProbe(keras.callbacks.Callback):
    """Stands for KerasTuner's checkpoint callback: it carries the tuner's
    objective and reads it from the logs, after the user's callbacks."""

    def __init__(self, name):
        super().__init__()
        self.objective = keras_tuner.Objective(name, direction="min")
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.objective.has_value(logs) and self.objective.get_value(logs))


def test_fit_logs_the_objective_before_the_tuner_reads_it():
    hypermodel = _hypermodel(EagerHyperModel, weightings=("equal",),
                             objectives=[objectives.DeltaM(TASKS, BASELINES)])
    model, hp = _build(hypermodel)
    probe = _TunerProbe("val_delta_m")
    history = hypermodel.fit(hp, model, _data("train", 16), validation_data=_data("validation", 16),
                             epochs=2, callbacks=[probe], verbose=0)
    assert probe.seen == history.history["val_delta_m"]  # same values, same epochs
    assert all(isinstance(v, float) for v in probe.seen)


# --- searches ----------------------------------------------------------------------
def _check_trials(tuner, expected):
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == expected
    for trial in trials:
        assert trial.status == "COMPLETED", trial.message
        m = trial.metrics
        # val_delta_m, by hand, from the same epoch's validation metrics.
        shape = -(m.get_last_value("val_shape_accuracy") - 0.5) / 0.5
        size = (m.get_last_value("val_size_mae") - 0.1) / 0.1
        assert m.get_last_value("val_delta_m") == pytest.approx(100 * (shape + size) / 2, rel=1e-5)
    return trials


def _searched(trial):
    """A trial's hyperparameters without Hyperband's bookkeeping."""
    values = trial.hyperparameters.values
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def _search_hypermodel(weightings=("equal", "dwa", "uncertainty")):
    return _hypermodel(EagerHyperModel, weightings=weightings, branch_points=(1.0, 0.7),
                       objectives=[objectives.DeltaM(TASKS, BASELINES)])


OBJECTIVE = keras_tuner.Objective("val_delta_m", direction="min")


@pytest.mark.slow  # long: `make test-slow` runs it
def test_random_search(tmp_path):
    tuner = keras_tuner.RandomSearch(
        _search_hypermodel(("equal", "pcgrad")), objective=OBJECTIVE, max_trials=2, seed=1,
        directory=str(tmp_path), project_name="random")
    tuner.search(_data("train", 32), validation_data=_data("validation", 16), epochs=1, verbose=0)
    trials = _check_trials(tuner, 2)
    best = tuner.get_best_hyperparameters()[0]
    assert best.values == min(trials, key=lambda t: t.score).hyperparameters.values
    model = tuner.hypermodel.build(best)
    assert isinstance(model, keras_mtl.MultiTaskModel)


@pytest.mark.slow  # long: `make test-slow` runs it
def test_bayesian_optimization(tmp_path):
    tuner = keras_tuner.BayesianOptimization(
        _search_hypermodel(), objective=OBJECTIVE, max_trials=2, num_initial_points=1,
        seed=0, directory=str(tmp_path), project_name="bayesian")
    tuner.search(_data("train", 32), validation_data=_data("validation", 16), epochs=1, verbose=0)
    trials = _check_trials(tuner, 2)
    # The whole space, conditional hyperparameters included, is known upfront.
    space = {p.name for p in tuner.oracle.get_space().space}
    assert {"dwa/temperature", "backbone", "shared_fraction", "learning_rate"} <= space
    assert len({str(t.hyperparameters.values) for t in trials}) == 2


@pytest.mark.slow  # long: `make test-slow` runs it
def test_hyperband_resumes_from_earlier_trials(tmp_path):
    tuner = keras_tuner.Hyperband(
        _search_hypermodel(), objective=OBJECTIVE, max_epochs=2, factor=2,
        hyperband_iterations=1, seed=0, directory=str(tmp_path), project_name="hyperband")
    # The first bracket: two 1-epoch trials, then the better one resumed for
    # a 2nd epoch from its checkpoint. `max_trials` (an `Oracle` attribute
    # that Hyperband's constructor does not take) ends the search there.
    tuner.oracle.max_trials = 3
    tuner.search(_data("train", 32), validation_data=_data("validation", 16), verbose=0)
    trials = _check_trials(tuner, 3)
    resumed = [t for t in trials if "tuner/trial_id" in t.hyperparameters.values]
    assert resumed, "Hyperband should continue a trial from its checkpoint"
    for trial in resumed:
        parent = tuner.oracle.get_trial(trial.hyperparameters.values["tuner/trial_id"])
        assert _searched(trial) == _searched(parent)
    assert tuner.get_best_models(1)[0].compiled
