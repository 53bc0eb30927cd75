"""NumPy scalars (`np.int64(3)`, `np.float32(0.5)`) are accepted wherever
Python numbers are, and normalised to Python `int` / `float`: configs stay
JSON-serialisable, `.keras` files load with `safe_mode=True`, and a bad NumPy
value gets the same Keras-style `ValueError` as a bad Python one.

Covers the weighting methods (every registered one), the architectures and
their layers, backbones, heads, callbacks, optimizers, the Distiller,
objectives, plots, the embedded datasets and the tuner's search space."""

import json
import re

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import architectures as A
from keras_mtl import callbacks
from keras_mtl import optimizers
from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.adversarial import GradientReversal
from keras_mtl.backbones import check_input_shape
from keras_mtl.backbones import small_cnn
from keras_mtl.datasets import digit_pairs
from keras_mtl.datasets import shapes
from keras_mtl.distillation import Distiller
from keras_mtl.heads import build_head

from conftest import bn_backbone, random_images, random_labels, registered_methods

i64, f32, f64 = np.int64, np.float32, np.float64
TASKS = [T.Regression("a"), T.BinaryClassification("b")]
NAMES = ["a", "b"]


def plain(value):
    """`value` with every NumPy scalar replaced by its Python number."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def assert_plain(value, where="config"):
    """Every leaf of `value` is a Python scalar (no NumPy type), and the
    whole is JSON-serialisable."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for n, v in enumerate(value):
            assert_plain(v, f"{where}[{n}]")
    else:
        assert value is None or type(value) in (int, float, str, bool), (where, value, type(value))
    json.dumps(value)


def save_and_load(model, tmp_path, name="model.keras"):
    path = str(tmp_path / name)
    model.save(path)
    return keras.models.load_model(path, safe_mode=True)


# --- weighting methods --------------------------------------------------------------
#: registry name -> constructor arguments as NumPy scalars, for the tasks a, b.
#: Every registered method is listed (checked below), with all its number
#: hyperparameters.
WEIGHTING_KWARGS = {
    "equal": {},
    "static": {"weights": {"a": f32(0.5), "b": i64(2)}},
    "inverse_size": {"counts": {"a": i64(8), "b": f64(6.0)}},
    "uncertainty": {"initial_log_variance": f32(0.5)},
    "dynamic_weight_average": {"temperature": f32(2.0)},
    "random_loss_weighting": {"seed": i64(7)},
    "geometric_loss": {"min_losses": {"a": f32(-1.0), "b": i64(0)}},
    "scale_invariant": {"min_losses": {"a": f64(-0.5), "b": i64(-1)}},
    "famo": {
        "learning_rate": f32(0.125), "weight_decay": f64(0.001), "min_losses": {"a": f32(-0.5)},
    },
    "stch": {"mu": f32(0.5), "warmup_epochs": i64(2), "min_losses": {"b": f64(-1.0)}},
    "imtl_l": {"initial_scale": f32(-0.5), "min_losses": {"a": i64(-1)}},
    "mgda": {"max_iterations": i64(10)},
    "pcgrad": {"seed": i64(3)},
    "cagrad": {"c": f32(0.5), "max_iterations": i64(10), "rescale": i64(2)},
    "imtl": {},
    "aligned_mtl": {"tolerance": f32(1e-4)},
    "grad_norm": {"alpha": f32(1.5), "learning_rate": f64(0.025), "min_weight": f32(0.01)},
    "nash_mtl": {"update_every": i64(2), "max_iterations": i64(5), "max_norm": f32(1.0)},
    "grad_vac": {"beta": f32(0.5), "seed": i64(1)},
    "grad_drop": {"leak": f32(0.25), "seed": i64(2)},
    "upgrad": {"regularization": f32(1e-3), "max_iterations": i64(4)},
    "dualproj": {"regularization": f64(1e-3), "max_iterations": i64(4)},
    "config": {"rcond": f32(1e-4)},
    "fairgrad": {"alpha": f32(2.0), "max_iterations": i64(30), "max_norm": f64(1.0)},
    "excess_mtl": {"robust_step_size": f32(0.5), "epsilon": f64(1e-7), "warmup_steps": i64(2)},
    "db_mtl": {"beta": f32(0.5), "beta_sigma": f64(0.5), "min_losses": {"a": f32(-1.0)}},
    "moco": {
        "beta": f32(0.75), "beta_sigma": i64(0), "gamma": f64(0.2), "gamma_sigma": f32(0.25),
        "rho": i64(1),
    },
    "sdmgrad": {"lamda": f32(0.5), "iterations": i64(5), "inner_learning_rate": f64(2.0),
                "momentum": f32(0.25)},
    "modo": {"gamma": f64(0.01), "rho": f32(0.5)},
}


def test_every_registered_method_is_covered():
    assert sorted(WEIGHTING_KWARGS) == sorted(registered_methods())


@pytest.mark.parametrize("method", sorted(WEIGHTING_KWARGS))
def test_weighting_takes_numpy_scalars(method):
    cls = W.get_class(method)
    kwargs = WEIGHTING_KWARGS[method]
    weighting = cls(**kwargs)
    config = weighting.get_config()
    assert_plain(config)
    # The same config as with Python numbers, value for value and type for type.
    same = cls(**plain(kwargs)).get_config()
    assert [(k, v, type(v)) for k, v in config.items() if k != "name"] == [
        (k, v, type(v)) for k, v in same.items() if k != "name"
    ]
    for argument, value in kwargs.items():
        assert config[argument] == pytest.approx(plain(value)), argument
    # Round trips through its config and Keras' serialisation.
    assert type(weighting).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(weighting)))
    )
    assert restored.get_config() == config
    # It builds for two tasks (a gradient method after it learns of the
    # shared variables, as in `compile`); a loss-level method weights two
    # losses.
    if cls.level == "gradient":
        weighting.build_shared([keras.Variable(np.zeros(3, "float32"))], (3,))
    weighting.build({n: () for n in NAMES})
    if cls.level == "loss":
        total, weights = weighting({"a": 1.0, "b": 2.0}, training=True)
        assert np.isfinite(float(total)) and sorted(weights) == NAMES


@pytest.mark.parametrize(
    "method", ["random_loss_weighting", "famo", "pcgrad", "upgrad", "nash_mtl"]
)
def test_numpy_weighting_trains_saves_and_loads_in_safe_mode(method, tmp_path):
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, strides=2)])
    model = keras_mtl.MultiTaskModel(trunk, TASKS, head_units=(8,))
    model.compile(weighting=W.get_class(method)(**WEIGHTING_KWARGS[method]))
    x, y = random_images(4), random_labels(TASKS, 4)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    restored = save_and_load(model, tmp_path)
    assert restored.weighting.get_config() == model.weighting.get_config()


# --- architectures ------------------------------------------------------------------
ARCHITECTURES = {
    "mmoe": lambda: A.MMoE(num_experts=i64(2), expert_units=(i64(6), np.int32(4))),
    "ple": lambda: A.PLE(
        num_levels=i64(2), shared_experts=i64(2), task_experts=i64(1),
        expert_units=np.array([4]),
    ),
    "mtan": lambda: A.MTAN(blocks=i64(2), reduction=i64(2)),
    "cross_stitch": lambda: A.CrossStitchNetwork(blocks=i64(1), init=f32(0.75)),
    "soft_sharing": lambda: A.SoftSharing(strength=f32(0.125)),
}
PLAIN_ARCHITECTURES = {
    "mmoe": lambda: A.MMoE(num_experts=2, expert_units=(6, 4)),
    "ple": lambda: A.PLE(num_levels=2, shared_experts=2, task_experts=1, expert_units=(4,)),
    "mtan": lambda: A.MTAN(blocks=2, reduction=2),
    "cross_stitch": lambda: A.CrossStitchNetwork(blocks=1, init=0.75),
    "soft_sharing": lambda: A.SoftSharing(strength=0.125),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_takes_numpy_scalars(name, tmp_path):
    architecture = ARCHITECTURES[name]()
    config = architecture.get_config()
    assert_plain(config)
    assert config == PLAIN_ARCHITECTURES[name]().get_config()
    assert type(architecture).from_config(config).get_config() == config
    model = keras_mtl.build_model(
        bn_backbone((4, 8)), TASKS, head_units=(8,), architecture=architecture
    )
    x = random_images(2, (32, 32, 3))
    expected = model.predict(x, verbose=0)
    restored = save_and_load(model, tmp_path)
    got = restored.predict(x, verbose=0)
    for task in NAMES:
        np.testing.assert_allclose(got[task], expected[task], atol=1e-6)


LAYERS = {
    "experts": lambda: A.Experts(i64(3), units=np.array([8, 4])),
    "mmoe_layer": lambda: A.MMoELayer(NAMES, num_experts=i64(3), expert_units=(i64(4),)),
    "extraction_network": lambda: A.ExtractionNetwork(
        NAMES, shared_experts=i64(2), task_experts=i64(1), expert_units=(i64(4),),
        shared_gate=True,
    ),
    "mtan_attention": lambda: A.MTANAttention(reduction=i64(2)),
    "cross_stitch": lambda: A.CrossStitch(init=f32(0.5)),
}
LAYER_INPUTS = {
    "experts": lambda: np.ones((2, 5), "float32"),
    "mmoe_layer": lambda: np.ones((2, 5), "float32"),
    "extraction_network": lambda: np.ones((2, 5), "float32"),
    "mtan_attention": lambda: np.ones((2, 4, 4, 8), "float32"),
    "cross_stitch": lambda: [np.ones((1, 2), "float32"), np.zeros((1, 2), "float32")],
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_architecture_layer_takes_numpy_scalars(name):
    layer = LAYERS[name]()
    layer(LAYER_INPUTS[name]())
    config = layer.get_config()
    assert_plain(config)
    clone = type(layer).from_config(config)
    clone(LAYER_INPUTS[name]())
    assert clone.get_config() == config


def test_soft_sharing_penalty_takes_a_numpy_strength():
    towers = {n: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]) for n in NAMES}
    layer = A.SoftSharingPenalty(towers, strength=f32(0.5))
    assert type(layer.strength) is float and layer.strength == 0.5


# --- backbones and heads ------------------------------------------------------------
def test_small_cnn_and_input_shape_take_numpy_integers():
    shape = (i64(16), i64(16), np.int32(3))
    assert check_input_shape(shape) == (16, 16, 3)
    assert check_input_shape(np.array([16, 16, 3])) == (16, 16, 3)
    assert all(type(d) is int for d in check_input_shape(shape))
    model = small_cnn(shape, filters=(i64(4), i64(8)), convs_per_block=i64(2), batch_norm=True)
    assert model.output.shape == (None, 4, 4, 8)
    assert_plain(model.get_config()["layers"][0]["config"]["batch_shape"])
    json.dumps(model.get_config())


def test_model_input_shape_and_freeze_blocks_take_numpy_integers(tmp_path):
    trunk = small_cnn((16, 16, 3), filters=(4, 8))
    model = keras_mtl.MultiTaskModel(trunk, TASKS, input_shape=np.array([16, 16, 3]))
    assert model.image_shape == (16, 16, 3) and all(type(d) is int for d in model.image_shape)
    json.dumps(model.get_config())
    built = keras_mtl.build_model(bn_backbone(), TASKS, freeze_blocks=i64(1))
    assert any(not layer.trainable for layer in built.trunk.layers)
    with pytest.raises(ValueError, match="input_shape"):
        keras_mtl.MultiTaskModel(trunk, TASKS, input_shape=(16, f32(16.5), 3))


def test_build_head_takes_numpy_units_and_dropout():
    head = build_head(T.Regression("a"), (2, 2, 8), (16, 16, 3), units=(i64(8),), dropout=f32(0.25))
    assert head.get_layer("dense_0").units == 8
    assert type(head.get_layer("dropout_0").rate) is float
    json.dumps(head.get_config())


def test_gradient_reversal_takes_a_numpy_scale():
    layer = GradientReversal(f32(0.5))
    assert_plain(layer.get_config())


# --- callbacks, optimizers, distillation ------------------------------------------------
def test_gradient_conflict_takes_a_numpy_every_n_steps():
    x, y = random_images(4), random_labels(TASKS, 4)
    conflict = callbacks.GradientConflict((x, y), every_n_steps=i64(2))
    assert type(conflict.every_n_steps) is int and conflict.every_n_steps == 2


def test_loss_weight_scheduler_takes_numpy_weights():
    trunk = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, strides=2)])
    model = keras_mtl.MultiTaskModel(trunk, TASKS, head_units=(8,))
    model.compile(weighting="static")
    scheduler = callbacks.LossWeightScheduler(lambda epoch, w: {"b": f32(0.5) * (epoch + 1)})
    x, y = random_images(4), random_labels(TASKS, 4)
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[scheduler], verbose=0)
    assert model.weighting.task_weights() == {"a": 1.0, "b": 1.0}


def test_learning_rate_multipliers_and_fine_tuning_take_numpy_scalars(tmp_path):
    optimizer = optimizers.fine_tuning(
        keras.optimizers.Adam(1e-3), backbone_factor=f32(0.5), head_factors={"a": f64(2.0)}
    )
    assert optimizer.multipliers == {"trunk": 0.5, "a": 2.0}
    wrapped = optimizers.LearningRateMultipliers("sgd", {"trunk": i64(0), "b": f32(0.25)})
    for opt in (optimizer, wrapped):
        assert_plain(opt.get_config()["multipliers"])
        json.dumps(keras.saving.serialize_keras_object(opt))
    trunk = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, strides=2)])
    model = keras_mtl.MultiTaskModel(trunk, TASKS, head_units=(8,))
    model.compile(optimizer=optimizer)
    model.fit(random_images(4), random_labels(TASKS, 4), batch_size=4, verbose=0)
    restored = save_and_load(model, tmp_path)
    assert restored.optimizer.multipliers == {"trunk": 0.5, "a": 2.0}


def _distiller(**kwargs):
    def model(tasks, name):
        trunk = small_cnn((16, 16, 3), filters=(4,), name=f"{name}_trunk")
        return keras_mtl.build_model(trunk, tasks, head_units=(4,), name=name)

    return Distiller(model(TASKS, "student"), {"a": model(TASKS[:1], "teacher")}, **kwargs)


def test_distiller_takes_numpy_temperature_and_alpha():
    distiller = _distiller(temperature=f32(2.0), alpha=f64(0.25))
    assert (distiller.temperature, distiller.alpha) == (2.0, 0.25)
    config = distiller.get_config()
    assert type(config["temperature"]) is float and type(config["alpha"]) is float
    json.dumps(config)


# --- objectives, metrics, plots --------------------------------------------------------
def test_objectives_take_numpy_scalars():
    objectives = keras_mtl.objectives
    baselines = {"a": {"mae": f32(2.0)}, "b": {"accuracy": f64(0.5)}}
    delta = objectives.DeltaM(TASKS, baselines=baselines)
    assert_plain(delta.baselines)
    score = objectives.WeightedScore(
        TASKS, weights={"a": i64(1), "b": f32(0.5)}, scales={"a": f32(2.0)}
    )
    assert_plain(score.weights)
    assert_plain(score.scales)
    value = keras_mtl.metrics.delta_m({"a": f32(1.0)}, {"a": f64(2.0)}, {"a": False})
    assert type(value) is float and value == -50.0


def test_plots_take_a_numpy_scalar_per_key(tmp_path):
    plots = pytest.importorskip("keras_mtl.plots")
    pytest.importorskip("matplotlib")
    path = plots.plot_task_weights(
        {"weight_a": f32(1.0), "weight_b": [f64(0.5), f32(0.75)]}, str(tmp_path / "w.png")
    )
    assert path.endswith("w.png")


# --- embedded datasets and the tuner --------------------------------------------------
def test_datasets_take_numpy_integers():
    images, labels = shapes.generate(
        "test", num_examples=i64(2), image_size=i64(16), seed=i64(1)
    )
    same_images, _ = shapes.generate("test", num_examples=2, image_size=16, seed=1)
    np.testing.assert_array_equal(images, same_images)
    images, _ = digit_pairs.generate(
        "test", num_examples=i64(2), image_size=i64(16), channels=i64(3), seed=i64(1)
    )
    same_images, _ = digit_pairs.generate("test", num_examples=2, image_size=16, channels=3, seed=1)
    np.testing.assert_array_equal(images, same_images)


def test_utkface_takes_numpy_image_size_split_and_seed(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from keras_mtl.datasets import utkface

    jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), "uint8")).numpy()
    for n, age in enumerate([30, 41, 52, 63]):
        (tmp_path / f"{age}_0_{n}_20170117145159065.jpg.chip.jpg").write_bytes(jpeg)
    train, val = utkface.load(
        str(tmp_path), image_size=(i64(12), np.int32(10)),
        validation_split=f32(0.25), subset="both", seed=i64(3),
    )
    assert (int(train.cardinality()), int(val.cardinality())) == (3, 1)
    image, _ = next(iter(train))
    assert tuple(image.shape) == (12, 10, 3)


def test_tuner_search_space_takes_numpy_scalars():
    pytest.importorskip("keras_tuner")
    from keras_mtl import tuning

    hypermodel = tuning.MultiTaskHyperModel(
        TASKS, input_shape=np.array([16, 16, 3]), backbones=("small_cnn",),
        weightings=("equal", "pcgrad"), branch_points=(f32(1.0), f64(0.5)),
        head_units=(i64(8), np.int32(4)), head_depths=(i64(1),),
        dropout_range=(f32(0.0), f32(0.25)), learning_rate_range=(f64(1e-4), f32(1e-2)),
        weighting_kwargs={"pcgrad": {"seed": i64(0)}},
    )
    for key in ("input_shape", "branch_points", "head_units", "head_depths",
                "dropout_range", "learning_rate_range"):
        assert_plain(getattr(hypermodel, key), key)
    # 8 and np.int64(8) are one value of the search space.
    with pytest.raises(ValueError, match=r"argument `head_units`. Expected distinct values"):
        tuning.MultiTaskHyperModel(
            TASKS, (16, 16, 3), backbones=("small_cnn",), head_units=(8, i64(8))
        )
    trunk = tuning.cut_backbone(small_cnn((16, 16, 3), filters=(4, 8, 8)), f32(0.75))
    assert trunk.output.shape == (None, 4, 4, 8)


# --- bad NumPy values: the same errors as bad Python ones ---------------------------------
BAD = [
    (lambda: W.DynamicWeightAverage(temperature=f32(-1.0)), "temperature", f32(-1.0)),
    (lambda: W.Static({"a": f32(-1.0), "b": 1.0}), "weights['a']", f32(-1.0)),
    (lambda: W.FAMO(learning_rate=f64(np.nan)), "learning_rate", f64(np.nan)),
    (lambda: W.GradDrop(leak=f32(1.5)), "leak", f32(1.5)),
    (lambda: W.PCGrad(seed=i64(-1)), "seed", i64(-1)),
    (lambda: W.RandomLossWeighting(seed=f32(1.0)), "seed", f32(1.0)),
    (lambda: W.UPGrad(max_iterations=i64(0)), "max_iterations", i64(0)),
    (lambda: W.NashMTL(update_every=i64(0)), "update_every", i64(0)),
    (lambda: W.AlignedMTL(tolerance=f32(1.0)), "tolerance", f32(1.0)),
    (lambda: A.MMoE(expert_units=(i64(0),)), "expert_units", (i64(0),)),
    (lambda: A.MMoE(num_experts=f32(2.0)), "num_experts", f32(2.0)),
    (lambda: A.MTAN(blocks=i64(0)), "blocks", i64(0)),
    (lambda: A.CrossStitchNetwork(blocks=i64(-1)), "blocks", i64(-1)),
    (lambda: A.CrossStitch(init=f32(1.5)), "init", f32(1.5)),
    (lambda: A.SoftSharing(strength=f32(-1.0)), "strength", f32(-1.0)),
    (lambda: small_cnn((16, 16, 3), filters=(i64(-4),)), "filters", (i64(-4),)),
    (lambda: check_input_shape((16, i64(0), 3)), "input_shape", (16, i64(0), 3)),
    (lambda: callbacks.GradientConflict(None, every_n_steps=i64(0)), "every_n_steps", i64(0)),
    (lambda: optimizers.fine_tuning(backbone_factor=f32(-1.0)), "backbone_factor", f32(-1.0)),
    (lambda: _distiller(alpha=f32(1.5)), "alpha", f32(1.5)),
    (lambda: _distiller(temperature=f32(0.0)), "temperature", f32(0.0)),
    (lambda: GradientReversal(f32(-1.0)), "scale", f32(-1.0)),
    (lambda: shapes.generate(seed=i64(-1)), "seed", i64(-1)),
    (lambda: digit_pairs.generate(channels=i64(2)), "channels", i64(2)),
    (lambda: digit_pairs.generate(num_examples=i64(0)), "num_examples", i64(0)),
]


@pytest.mark.parametrize(
    "make, argument, value", BAD, ids=[f"{a}={v!r}" for _, a, v in BAD]
)
def test_a_bad_numpy_value_is_refused_by_name(make, argument, value):
    expected = (
        rf"Invalid value received for argument `{re.escape(argument)}`\. Expected .*"
        rf"Received: {re.escape(argument)}={re.escape(repr(value))}"
    )
    with pytest.raises(ValueError, match=expected):
        make()
