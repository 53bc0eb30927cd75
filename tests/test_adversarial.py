"""Tests for `keras_mtl.adversarial` (gradient reversal, Ganin & Lempitsky
2015) and adversarial tasks (`Task(..., gradient_reversal=λ)`).

Backend-agnostic: `make test` also runs them on JAX.
"""

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import tasks as T
from keras_mtl import weighting as W
from keras_mtl.adversarial import GradientReversal

from conftest import needs_tf, random_images, random_labels, tiny_model


def gradient(fn, variables):
    """Gradients of the scalar `fn()` w.r.t. `variables`, on either backend."""
    if keras.backend.backend() == "jax":
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn()

        return [np.asarray(g) for g in jax.grad(pure)([v.value for v in variables])]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        value = fn()
    return [np.asarray(g) for g in tape.gradient(value, variables)]


# --- the layer ----------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 0.3, 0.0])
def test_identity_forward_and_minus_scale_times_the_gradient_backward(scale):
    rng = np.random.default_rng(0)
    x = keras.Variable(rng.normal(size=(4, 3)).astype("float32"))
    weights = rng.normal(size=(4, 3)).astype("float32")
    layer = GradientReversal(scale)
    forward = layer(keras.ops.convert_to_tensor(x.numpy()))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(forward), x.numpy())
    # d/dx Σ w ⊙ R(x) = -λ w. (The layer reads a tensor computed from the
    # variable, as a head reads the trunk's output.)
    (grad,) = gradient(lambda: keras.ops.sum(layer(x.value * 1.0) * weights), [x])
    np.testing.assert_allclose(grad, -scale * weights, rtol=1e-6, atol=0)


def test_scale_is_a_variable_that_can_change_between_steps():
    x = keras.Variable(np.ones((2, 2), "float32"))
    layer = GradientReversal(1.0)
    layer.scale.assign(0.25)
    (grad,) = gradient(lambda: keras.ops.sum(layer(x.value * 1.0)), [x])
    np.testing.assert_allclose(grad, -0.25 * np.ones((2, 2)))
    assert layer.get_config()["scale"] == 1.0  # the constructor argument
    assert not layer.trainable_weights


@pytest.mark.parametrize("scale", [-0.5, float("inf"), float("nan"), True, "1", None])
def test_bad_scale(scale):
    with pytest.raises(
        ValueError, match=r"argument `scale`. Expected a finite number >= 0. Received: scale="
    ):
        GradientReversal(scale)


# --- adversarial tasks ----------------------------------------------------------------
def test_bad_gradient_reversal_names_the_argument():
    with pytest.raises(
        ValueError,
        match=r"argument `gradient_reversal`. Expected a finite number >= 0. "
              r"Received: gradient_reversal=-1",
    ):
        T.Regression("domain", gradient_reversal=-1)


@pytest.mark.parametrize(
    "task",
    [
        T.Regression("adv", gradient_reversal=0.5),
        T.BinaryClassification("adv", gradient_reversal=0.5),
        T.MulticlassClassification("adv", 3, gradient_reversal=0.5),
        T.MultilabelClassification("adv", 2, gradient_reversal=0.5),
        T.Segmentation("adv", 3, gradient_reversal=0.5),
        T.DenseRegression("adv", gradient_reversal=0.5),
    ],
    ids=lambda t: type(t).__name__,
)
def test_every_task_kind_builds_its_head_behind_the_reversal(task):
    head = keras_mtl.heads.build_head(task, (4, 4, 8), (16, 16, 3), units=(8,))
    layer = head.get_layer("gradient_reversal")
    assert isinstance(layer, GradientReversal) and layer.initial_scale == 0.5
    restored = type(task).from_config(task.get_config())
    assert restored.gradient_reversal == 0.5
    plain = type(task).from_config({**task.get_config(), "gradient_reversal": None})
    head = keras_mtl.heads.build_head(plain, (4, 4, 8), (16, 16, 3), units=(8,))
    assert not any(isinstance(l, GradientReversal) for l in head.layers)


def _models(scale):
    """The same weights with and without an adversarial second task."""
    models = []
    for reversal in (None, scale):
        keras.utils.set_random_seed(0)
        tasks = [T.Regression("main"), T.BinaryClassification("domain", gradient_reversal=reversal)]
        model = tiny_model(tasks)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        models.append(model)
    return models


def test_the_trunk_gets_main_minus_scale_times_adversarial_gradient():
    plain, adversarial = _models(scale=0.5)
    tasks = [T.Regression("main"), T.BinaryClassification("domain")]
    x = random_images(8) / 255.0
    y = random_labels(tasks, 8)

    def loss(model, names):
        y_pred = model(x, training=True)
        losses = model.task_losses(y, y_pred)
        return keras.ops.sum(keras.ops.stack([losses[n] for n in names]))

    trunk = plain.trunk.trainable_variables
    main = gradient(lambda: loss(plain, ["main"]), trunk)
    domain = gradient(lambda: loss(plain, ["domain"]), trunk)
    both = gradient(lambda: loss(adversarial, ["main", "domain"]), adversarial.trunk.trainable_variables)
    for g, a, b in zip(both, main, domain):
        np.testing.assert_allclose(g, a - 0.5 * b, rtol=1e-4, atol=1e-6)
    # The head itself learns the task as usual.
    head = plain.heads["domain"].trainable_variables
    own = gradient(lambda: loss(plain, ["domain"]), head)
    reversed_model_head = gradient(
        lambda: loss(adversarial, ["domain"]), adversarial.heads["domain"].trainable_variables
    )
    for a, b in zip(own, reversed_model_head):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "weighting", [None, W.Uncertainty(), W.PCGrad(mode="representation", seed=1)],
    ids=["none", "uncertainty", "pcgrad"],
)
def test_fit_and_keras_round_trip(weighting, tmp_path):
    tasks = [T.Regression("main"), T.MulticlassClassification("domain", 3, gradient_reversal=1.0)]
    keras.utils.set_random_seed(0)
    model = tiny_model(tasks)
    model.compile(optimizer="adam", weighting=weighting)
    x, y = random_images(16) / 255.0, random_labels(tasks, 16)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert {"main_loss", "domain_loss"} <= set(history.history)
    model.heads["domain"].get_layer("gradient_reversal").scale.assign(0.3)
    path = str(tmp_path / "adversarial.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    layer = loaded.heads["domain"].get_layer("gradient_reversal")
    assert float(keras.ops.convert_to_numpy(layer.scale)) == pytest.approx(0.3)
    assert loaded.tasks[1].gradient_reversal == 1.0
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in ("main", "domain"):
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)


@needs_tf
def test_saved_model_export_serves_an_adversarial_head(tmp_path):
    import tensorflow as tf

    model = tiny_model([T.Regression("main"), T.BinaryClassification("source", gradient_reversal=0.5)])
    x = random_images(4) / 255.0
    keras_mtl.export_saved_model(model, str(tmp_path / "1"))
    serve = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"]
    (name,) = serve.structured_input_signature[1]
    served = serve(**{name: tf.constant(x, "float32")})
    expected = model.predict(x, verbose=0)
    for task in ("main", "source"):
        np.testing.assert_allclose(served[task].numpy(), expected[task], atol=1e-6)
