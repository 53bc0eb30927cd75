"""Per-task trunks: heads attached at backbone layers (`attach_at`) and trunks
whose output is a dict `{task: z_t}`, with loss- and gradient-level weighting."""

import keras
import numpy as np
import pytest
from conftest import needs_tf
from conftest import random_images
from conftest import random_labels

import keras_mtl
from keras_mtl import tasks as tasks_lib


def backbone():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    return keras.Model(inputs, x, name="backbone")


def branched_tasks():
    return [
        tasks_lib.Regression("early", attach_at="pool1"),
        tasks_lib.BinaryClassification("late"),
        tasks_lib.Segmentation("mask", num_classes=3, attach_at="conv1"),
    ]


def branched_model():
    return keras_mtl.build_model(backbone(), branched_tasks(), head_units=(8,))


def test_heads_read_the_layers_they_attach_at():
    model = branched_model()
    shapes = {n: tuple(z.shape) for n, z in model.trunk.output.items()}
    assert shapes == {
        "early": (None, 8, 8, 4), "late": (None, 8, 8, 8), "mask": (None, 16, 16, 4)
    }
    assert not model.shares_representation
    x = random_images(2)
    z = model.representation(x)
    inner = model.trunk  # the backbone's layers, with several outputs
    pooled = keras.Model(inner.inputs, inner.get_layer("pool1").output)(model.preprocess(x))
    np.testing.assert_allclose(z["early"], pooled, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0)["early"],
                               model.heads["early"](z["early"]), atol=1e-5)


def test_unknown_attach_at_lists_the_layers():
    tasks = [tasks_lib.Regression("a", attach_at="conv9"), tasks_lib.Regression("b")]
    with pytest.raises(ValueError, match=r"attach_at.*task 'a'.*'conv1', 'pool1', 'conv2'.*conv9"):
        keras_mtl.build_model(backbone(), tasks, head_units=(8,))
    with pytest.raises(ValueError, match="Expected None or the name of a backbone layer"):
        tasks_lib.Regression("a", attach_at=3)


def test_dict_trunk_needs_one_output_per_task():
    inputs = keras.Input((16, 16, 3))
    z = keras.layers.Conv2D(4, 3)(inputs)
    trunk = keras.Model(inputs, {"a": z, "c": z})
    with pytest.raises(ValueError, match=r"one output per task \['a', 'b'\].*\['a', 'c'\]"):
        keras_mtl.MultiTaskModel(trunk, [tasks_lib.Regression("a"), tasks_lib.Regression("b")])


@pytest.mark.parametrize("weighting", ["uncertainty", "pcgrad", "nash_mtl"])
def test_branched_model_trains_and_round_trips(tmp_path, weighting):
    model = branched_model()
    if weighting == "nash_mtl":  # the reuse path: one backward pass of the stored combination
        weighting = keras_mtl.weighting.NashMTL(update_every=2)
    model.compile(optimizer="adam", weighting=weighting)
    tasks = branched_tasks()
    x, y = random_images(16), random_labels(tasks, 16)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert {"weight_early", "weight_late", "weight_mask"} <= set(history.history)
    path = tmp_path / "branched.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert [t.attach_at for t in loaded.tasks] == ["pool1", None, "conv1"]
    for name, value in model.predict(x, verbose=0).items():
        np.testing.assert_allclose(loaded.predict(x, verbose=0)[name], value, atol=1e-6)


def test_representation_mode_is_refused_without_a_shared_z():
    model = branched_model()
    with pytest.raises(ValueError, match="mode='representation' on a trunk with per-task"):
        model.compile(weighting=keras_mtl.weighting.MGDA(mode="representation"))


@needs_tf
def test_params_mode_update_is_the_methods_combination_of_exact_task_gradients():
    import tensorflow as tf

    model = branched_model()
    tasks = branched_tasks()
    x, y = random_images(8), random_labels(tasks, 8)
    reference = keras_mtl.weighting.MGDA(mode="params")
    reference.build({t.name: () for t in tasks})

    trunk_vars = model.trunk.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        model.compile(optimizer="sgd")
        losses = model.task_losses(y, model(x, training=True))
    def flat_gradient(loss):  # zeros where a task does not reach a layer
        grads = tape.gradient(loss, trunk_vars)
        return tf.concat([
            tf.reshape(tf.zeros(v.shape) if g is None else g, [-1]) for g, v in zip(grads, trunk_vars)
        ], 0)

    grads = tf.stack([flat_gradient(losses[n]) for n in model.task_names])
    combined, _ = reference.combine(grads, losses, training=True)
    head_grads = {
        n: tape.gradient(losses[n], model.heads[n].trainable_variables) for n in model.task_names
    }
    before = [v.numpy() for v in trunk_vars]
    heads_before = {n: [v.numpy() for v in model.heads[n].trainable_variables] for n in model.task_names}

    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0),
                  weighting=keras_mtl.weighting.MGDA(mode="params"))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    after = np.concatenate([(v.numpy() - b).ravel() for v, b in zip(trunk_vars, before)])
    np.testing.assert_allclose(after, -combined.numpy(), atol=1e-5)
    for n in model.task_names:
        for v, b, g in zip(model.heads[n].trainable_variables, heads_before[n], head_grads[n]):
            np.testing.assert_allclose(v.numpy() - b, -g.numpy(), atol=1e-5)


def test_attach_at_and_an_architecture_do_not_mix():
    tasks = [tasks_lib.Regression("a", attach_at="pool1"), tasks_lib.Regression("b")]
    with pytest.raises(ValueError, match=r"`architecture`.*\{'a': 'pool1'\}.*one or the other"):
        keras_mtl.build_model(backbone(), tasks, head_units=(8,),
                              architecture=keras_mtl.architectures.MMoE(num_experts=2))
