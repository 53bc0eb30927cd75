"""Tests for `keras_mtl.optimizers` (per-variable learning-rate multipliers)
and the `freeze_blocks` policy of `build_model`.

Hand-checkable: SGD steps are `rate × gradient`; with Adam, scaling the rate
of a variable scales its step exactly (its moments do not depend on the
rate); inside `fit`, the first step of a wrapped optimizer is `multiplier`
times the first step of the plain one from the same weights.
Backend-agnostic (TensorFlow and JAX).
"""

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl.optimizers import LearningRateMultipliers, fine_tuning

from conftest import random_images, random_labels

SHAPE = (32, 32, 3)


def tasks():
    return [keras_mtl.tasks.Regression("age"), keras_mtl.tasks.BinaryClassification("gender")]


def hydranet(**kwargs):
    backbone = keras_mtl.tuning.small_cnn(SHAPE, filters=(8, 16, 16))
    return keras_mtl.build_model(backbone, tasks(), head_units=(8,), **kwargs)


def data(n=8, seed=0):
    return random_images(n, SHAPE, seed=seed), random_labels(tasks(), n, SHAPE, seed=seed)


def two_layers():
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="b")(keras.layers.Dense(4, name="a")(inputs))
    return keras.Model(inputs, outputs)


def values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def gradients(variables, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=v.shape).astype("float32") for v in variables]


def step(model, optimizer, grads):
    """Applies `grads` once; returns each variable's change."""
    before = values(model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return [a - b for a, b in zip(values(model.trainable_variables), before)]


# --- the update rule, by hand --------------------------------------------------
def test_sgd_step_is_rate_times_multiplier_times_gradient():
    model = two_layers()
    optimizer = LearningRateMultipliers(keras.optimizers.SGD(0.1), {"a": 0.5})
    optimizer.bind(model)
    grads = gradients(model.trainable_variables)
    deltas = step(model, optimizer, grads)
    rates = [0.05, 0.05, 0.1, 0.1]  # a/kernel, a/bias, b/kernel, b/bias
    for delta, grad, rate in zip(deltas, grads, rates):
        np.testing.assert_allclose(delta, -rate * grad, rtol=1e-5, atol=1e-7)


def test_unbound_optimizer_matches_keys_to_variable_paths():
    model = two_layers()
    optimizer = LearningRateMultipliers(keras.optimizers.SGD(0.1), {"b": 2.0})
    grads = gradients(model.trainable_variables)
    deltas = step(model, optimizer, grads)
    np.testing.assert_allclose(deltas[0], -0.1 * grads[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(deltas[2], -0.2 * grads[2], rtol=1e-5, atol=1e-7)


def test_wildcard_keys_cover_every_matching_layer():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="unit_0")(inputs)
    x = keras.layers.Dense(4, name="unit_1")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="unit_1_out")(x))
    # The exact key of a single layer wins over the wildcard that also covers it.
    optimizer = LearningRateMultipliers(
        keras.optimizers.SGD(0.1), {"unit_?": 10.0, "unit_1": 0.0, "*_out": 2.0}
    )
    optimizer.bind(model)
    rates = [optimizer.multiplier(v) for v in model.trainable_variables]
    assert rates == [10.0, 10.0, 0.0, 0.0, 2.0, 2.0]
    unbound = LearningRateMultipliers(keras.optimizers.SGD(0.1), {"unit_*": 3.0})
    assert [unbound.multiplier(v) for v in model.trainable_variables] == [3.0] * 6
    with pytest.raises(ValueError, match=r"unknown keys \['block_\*'\]"):
        LearningRateMultipliers("sgd", {"block_*": 2.0}).bind(model)


def test_cross_stitch_units_at_the_papers_larger_rate():
    from keras_mtl.architectures import CrossStitchNetwork

    model = keras_mtl.build_model(
        keras_mtl.tuning.small_cnn(SHAPE, filters=(4, 4)), tasks(), head_units=(8,),
        architecture=CrossStitchNetwork(),
    )
    model.compile(optimizer=LearningRateMultipliers("adam", {"cross_stitch_*": 100.0}))
    optimizer = model.optimizer
    alphas = [v for v in model.trainable_variables if "alpha" in v.path]
    assert alphas and all(optimizer.multiplier(v) == 100.0 for v in alphas)
    others = [v for v in model.trainable_variables if "alpha" not in v.path]
    assert all(optimizer.multiplier(v) == 1.0 for v in others)


def test_adam_steps_are_multiplier_times_plain_adam_steps():
    plain, wrapped = two_layers(), two_layers()
    wrapped.set_weights(plain.get_weights())
    adam = keras.optimizers.Adam(0.01)
    optimizer = LearningRateMultipliers(keras.optimizers.Adam(0.01), {"b": 0.3})
    optimizer.bind(wrapped)
    for seed in range(3):  # moments don't depend on the rate: exact at every step
        grads = gradients(plain.trainable_variables, seed)
        expected = step(plain, adam, grads)
        deltas = step(wrapped, optimizer, grads)
        for delta, reference, m in zip(deltas, expected, [1.0, 1.0, 0.3, 0.3]):
            # atol: float32 rounding of `w + delta` (weights ~0.5, ulp 6e-8).
            np.testing.assert_allclose(delta, m * reference, rtol=1e-5, atol=1e-7)
    assert int(optimizer.iterations) == int(optimizer.inner_optimizer.iterations) == 3


def test_weight_decay_is_applied_at_the_variable_rate():
    model = two_layers()
    optimizer = LearningRateMultipliers(
        keras.optimizers.SGD(0.1, weight_decay=0.5), {"a": 0.5}
    )
    optimizer.bind(model)
    w = values(model.trainable_variables)
    grads = gradients(model.trainable_variables)
    deltas = step(model, optimizer, grads)
    for delta, weight, grad, rate in zip(deltas, w, grads, [0.05, 0.05, 0.1, 0.1]):
        # Decoupled decay first, then the SGD step, both at the variable's rate.
        np.testing.assert_allclose(delta, -weight * 0.5 * rate - rate * grad, rtol=1e-5, atol=1e-7)


def test_zero_multiplier_freezes_without_state_or_decay():
    model = two_layers()
    optimizer = LearningRateMultipliers(keras.optimizers.AdamW(0.1, weight_decay=0.1), {"a": 0})
    optimizer.bind(model)
    deltas = step(model, optimizer, gradients(model.trainable_variables))
    assert not np.any(deltas[0]) and not np.any(deltas[1])
    assert np.all(deltas[2] != 0) and np.all(deltas[3] != 0)
    # Iterations and rate of each, plus two moments for b's two variables.
    assert len(optimizer.variables) == 2 + 2 + 2 * 2


@pytest.mark.parametrize(
    "settings",
    [
        {"clipnorm": 0.1},
        {"global_clipnorm": 0.1},
        {"use_ema": True, "ema_overwrite_frequency": 2},
        {"gradient_accumulation_steps": 2},
        {"weight_decay": 0.1},
    ],
)
def test_without_multipliers_it_steps_as_the_wrapped_optimizer(settings):
    plain, wrapped = two_layers(), two_layers()
    wrapped.set_weights(plain.get_weights())
    adam = keras.optimizers.Adam(0.01, **settings)
    optimizer = LearningRateMultipliers(keras.optimizers.Adam(0.01, **settings), {})
    for seed in range(4):
        grads = gradients(plain.trainable_variables, seed)
        step(plain, adam, grads)
        step(wrapped, optimizer, grads)
        for a, b in zip(values(wrapped.trainable_variables), values(plain.trainable_variables)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# --- arguments --------------------------------------------------------------------
def test_unknown_key_names_the_valid_layers():
    model = hydranet()
    with pytest.raises(
        ValueError,
        match=r"one of \['age', 'block0_conv'.*'trunk'\]. Received unknown keys \['encoder'\]",
    ):
        model.compile(optimizer=LearningRateMultipliers("adam", {"encoder": 0.1, "age": 2.0}))
    unbound = LearningRateMultipliers("sgd", {"encoder": 0.1})
    with pytest.raises(
        ValueError, match=r"not bound.*'a', 'b', 'bias'.*unknown keys \['encoder'\]"
    ):
        unbound.build(two_layers().trainable_variables)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"multipliers": ["trunk"]}, r"`multipliers`. Expected a dict"),
        ({"multipliers": {"trunk": -0.1}},
         r"`multipliers\['trunk'\]`.*Received: multipliers\['trunk'\]=-0.1"),
        ({"multipliers": {"trunk": float("nan")}}, r"Expected a finite number >= 0"),
        ({"optimizer": keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())},
         r"`optimizer`"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"optimizer": "sgd", "multipliers": {}, **kwargs}
    with pytest.raises(ValueError, match=match):
        LearningRateMultipliers(**kwargs)


def test_fine_tuning_recipe_and_its_arguments():
    optimizer = fine_tuning(keras.optimizers.SGD(0.1), backbone_factor=0.1, head_factors={"age": 2})
    assert optimizer.multipliers == {"trunk": 0.1, "age": 2.0}
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.SGD)
    with pytest.raises(ValueError, match=r"`backbone_factor`.*Received: backbone_factor=-1"):
        fine_tuning(backbone_factor=-1)
    with pytest.raises(ValueError, match=r"`head_factors`.*backbone_factor"):
        fine_tuning(head_factors={"trunk": 0.5})


# --- inside model.fit --------------------------------------------------------------
def first_steps(weighting, optimizer, plain_optimizer):
    """The first `fit` step of the same model and batch, with the wrapped and
    the plain optimizer: `(model, wrapped deltas, plain deltas)`."""
    x, y = data()
    deltas = []
    init = None
    for opt in (optimizer, plain_optimizer):
        model = hydranet()
        if init is None:
            init = model.get_weights()
        model.set_weights(init)
        model.compile(optimizer=opt, weighting=weighting)
        before = values(model.trainable_variables)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        deltas.append([a - b for a, b in zip(values(model.trainable_variables), before)])
    return model, deltas[0], deltas[1]


@pytest.mark.parametrize("weighting", ["uncertainty", "pcgrad"])
def test_fit_first_step_is_scaled_per_group(weighting):
    optimizer = fine_tuning(
        keras.optimizers.Adam(1e-2), backbone_factor=0.1, head_factors={"age": 0}
    )
    model, deltas, plain = first_steps(weighting, optimizer, keras.optimizers.Adam(1e-2))
    trunk = {id(v) for v in model.trunk.trainable_variables}
    age = {id(v) for v in model.heads["age"].trainable_variables}
    for v, delta, reference in zip(model.trainable_variables, deltas, plain):
        m = 0.1 if id(v) in trunk else 0.0 if id(v) in age else 1.0
        assert np.any(reference != 0), v.path
        # atol: Adam's first step is ~rate x sign(g); where |g| ~ epsilon,
        # the ulp-level differences of two compiled steps are amplified.
        np.testing.assert_allclose(delta, m * reference, rtol=1e-4, atol=1e-6, err_msg=v.path)


def test_learning_rate_callbacks_move_every_group_together():
    # The scheduler sets the rate before the first step: the step is then
    # 0.5 x the plain SGD step at the scheduled rate 0.02, not at 0.1.
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.02)
    x, y = data()
    init, deltas = None, []
    for opt in (LearningRateMultipliers(keras.optimizers.SGD(0.1), {"trunk": 0.5}),
                keras.optimizers.SGD(0.02)):
        model = hydranet()
        init = init or model.get_weights()
        model.set_weights(init)
        model.compile(optimizer=opt)
        before = values(model.trainable_variables)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[scheduler])
        deltas.append([a - b for a, b in zip(values(model.trainable_variables), before)])
    trunk = len(model.trunk.trainable_variables)
    for i, (delta, reference) in enumerate(zip(*deltas)):
        m = 0.5 if i < trunk else 1.0
        np.testing.assert_allclose(delta, m * reference, rtol=1e-4, atol=1e-8)
    # ReduceLROnPlateau reads and sets the wrapped rate.
    optimizer = LearningRateMultipliers(keras.optimizers.SGD(0.1), {"trunk": 0.5})
    model = hydranet()
    model.compile(optimizer=optimizer)
    plateau = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=1e9)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[plateau])
    assert float(optimizer.inner_optimizer.learning_rate) == pytest.approx(0.05)


def test_keras_round_trip_restores_optimizer_state(tmp_path):
    x, y = data()
    x2, y2 = data(seed=1)
    model = hydranet()
    model.compile(
        optimizer=fine_tuning(keras.optimizers.Adam(1e-2), backbone_factor=0.1,
                              head_factors={"gender": 0}),
        weighting="uncertainty",
    )
    initial_gender = model.heads["gender"].get_weights()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.optimizer, LearningRateMultipliers)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.inner_optimizer.iterations) == 2
    for m in (model, loaded):  # same batches in the same order
        m.fit(x2, y2, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(loaded.heads["gender"].get_weights(), initial_gender):
        np.testing.assert_array_equal(a, b)


# --- build_model(freeze_blocks=k) ---------------------------------------------------
def test_freeze_blocks_keeps_the_first_blocks_fixed_during_fit(tmp_path):
    model = hydranet(freeze_blocks=2)
    frozen = [model.trunk.get_layer(n) for n in ("block0_conv", "block1_conv")]
    assert [layer.trainable for layer in frozen] == [False, False]
    assert model.trunk.get_layer("block2_conv").trainable
    assert len(model.trunk.trainable_variables) == 2  # block2's kernel and bias
    before = [values(layer.weights) for layer in frozen]
    last = values(model.trunk.get_layer("block2_conv").weights)
    model.compile(optimizer=fine_tuning(keras.optimizers.Adam(1e-2)), weighting="pcgrad")
    x, y = data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for layer, weights in zip(frozen, before):
        for a, b in zip(values(layer.weights), weights):
            np.testing.assert_array_equal(a, b)
    trained = values(model.trunk.get_layer("block2_conv").weights)
    assert all(np.any(a != b) for a, b in zip(trained, last))
    path = str(tmp_path / "frozen.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert not loaded.trunk.get_layer("block1_conv").trainable
    assert len(loaded.trunk.trainable_variables) == 2


def test_frozen_batch_normalization_keeps_its_statistics():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2, name="top")(x))
    model = keras_mtl.build_model(backbone, tasks(), head_units=(8,), freeze_blocks=2)
    statistics = values(backbone.get_layer("bn").non_trainable_weights)
    model.compile(optimizer="adam")
    x, y = data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for a, b in zip(values(backbone.get_layer("bn").non_trainable_weights), statistics):
        np.testing.assert_array_equal(a, b)  # inference mode: no moving-average update


@pytest.mark.parametrize("count", [4, -1, 1.0, True])
def test_freeze_blocks_must_count_existing_blocks(count):
    with pytest.raises(
        ValueError,
        match=r"`freeze_blocks`. Expected an integer from 0 to 3.*\['block0_conv', 'block1_conv', "
        r"'block2_conv'\]",
    ):
        hydranet(freeze_blocks=count)
