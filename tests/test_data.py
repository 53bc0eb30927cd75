import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl import data
from keras_mtl import tasks as T
from keras_mtl.datasets import shapes

from conftest import needs_tf, random_images, random_labels, tiny_trunk


# --- helpers -----------------------------------------------------------------------
def labelled(task, batches, batch_size=1, value=1.0, dtype="float32", features=2):
    """A batched source of `batches` batches labelled for `task` only."""
    n = batches * batch_size
    x = tf.fill((n, features), value)
    y = {task: tf.cast(tf.fill((n, 1), value), dtype)}
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def sources_of(ds, names, epochs=1):
    """The source of each batch, told by which task has a positive weight."""
    index = ds.map(lambda x, y, sw: tf.argmax(tf.stack([sw[n][0] for n in names])))
    order = []
    for _ in range(epochs):  # one pass over the dataset per epoch, in-graph
        for chunk in index.batch(100_000):
            order.extend(chunk.numpy().tolist())
    return order


def counts(order, k):
    return np.bincount(order, minlength=k)


# --- schedules ---------------------------------------------------------------------
def test_round_robin_alternates_exactly():
    ds = data.interleave({"a": labelled("a", 5), "b": labelled("b", 3), "c": labelled("c", 2)})
    order = sources_of(ds, ["a", "b", "c"], epochs=2)
    assert order == [0, 1, 2] * 10  # longest: 3 x 5 batches per epoch, twice
    assert counts(order, 3).tolist() == [10, 10, 10]


@pytest.mark.parametrize(
    "schedule, kwargs", [("proportional", {}), ("temperature", {"temperature": 2.0})]
)
def test_sampling_counts_follow_the_probabilities(schedule, kwargs):
    ds = data.interleave(
        {"big": labelled("a", 300), "small": labelled("b", 100)}, schedule, seed=1, **kwargs
    )
    expected = data.sampling_probabilities([300, 100], schedule, **kwargs)
    order = sources_of(ds, ["a", "b"], epochs=5)
    share = counts(order, 2) / len(order)
    assert abs(share[0] - expected[0]) < 0.03, (share, expected)
    assert schedule != "temperature" or expected[0] == pytest.approx(0.634, abs=1e-3)


def test_annealed_moves_from_proportional_towards_uniform_across_epochs():
    # Small real datasets, declared sizes: probabilities use `sizes=`.
    ds = data.interleave(
        {"big": labelled("a", 3), "small": labelled("b", 2)},
        "annealed", num_epochs=3, sizes={"big": 900, "small": 100}, seed=0,
    )
    assert int(ds.cardinality()) == 1000
    shares = []
    for epoch in (1, 2, 3):
        order = sources_of(ds, ["a", "b"])
        shares.append(counts(order, 2)[0] / len(order))
        expected = data.sampling_probabilities(
            [900, 100], "annealed", num_epochs=3, epoch=epoch)[0]
        assert abs(shares[-1] - expected) < 0.04, (epoch, shares[-1], expected)
    assert shares[0] > shares[1] > shares[2]
    # After E epochs the exponent stays at its last value (0.2).
    assert abs(counts(sources_of(ds, ["a", "b"]), 2)[0] / 1000 - 0.608) < 0.04


def test_annealed_inside_plain_fit_follows_the_fit_epochs():
    """Keras makes and drops iterators around each epoch; the counter must
    see one epoch per epoch all the same."""
    def build():
        return data.interleave(
            {"big": labelled("a", 90), "small": labelled("b", 10)},
            "annealed", num_epochs=3, seed=3,
        )

    reference = build()
    expected = [counts(sources_of(reference, ["a", "b"]), 2).tolist() for _ in range(3)]
    seen = tf.Variable(tf.zeros(2, tf.int64))

    def record(x, y, sw):
        # Synchronous, at the very end: counts what the model is given.
        step = seen.assign_add(tf.cast(tf.stack([sw["a"][0] > 0, sw["b"][0] > 0]), tf.int64))
        with tf.control_dependencies([step]):
            return tf.identity(x), y, sw

    per_epoch = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            per_epoch.append(seen.numpy().tolist())
            seen.assign(tf.zeros(2, tf.int64))

    trunk = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model = keras_mtl.MultiTaskModel(trunk, [T.Regression("a"), T.Regression("b")], head_units=(2,))
    model.compile(steps_per_execution=20)
    model.fit(build().map(record), epochs=3, verbose=0, callbacks=[Record()])
    assert per_epoch == expected
    assert expected[0][1] < expected[1][1] < expected[2][1]


def test_a_loaded_model_resumed_at_an_epoch_draws_that_epochs_sources(tmp_path):
    """`.keras` + `fit(initial_epoch=1)` with the dataset built again equals
    the uninterrupted run: `fit` tells the dataset the epoch (without it,
    the new dataset would draw epoch 0's sources again)."""
    def build():
        return data.interleave({"big": labelled("a", 6, value=1.0), "small": labelled("b", 2, value=-2.0)},
                               "temperature", temperature=2.0, seed=3)

    order = sources_of(build(), ["a", "b"], epochs=2)
    assert order[:len(order) // 2] != order[len(order) // 2:]  # epochs draw anew

    def fresh():
        keras.utils.set_random_seed(0)
        trunk = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        model = keras_mtl.MultiTaskModel(
            trunk, [T.Regression("a"), T.Regression("b")], head_units=(2,))
        model.compile(optimizer="adam", weighting="uncertainty")
        return model

    uninterrupted = fresh()
    uninterrupted.fit(build(), epochs=2, verbose=0)
    first = fresh()
    first.fit(build(), epochs=1, verbose=0)
    first.save(tmp_path / "epoch1.keras")
    resumed = keras.models.load_model(tmp_path / "epoch1.keras")
    resumed.fit(build(), initial_epoch=1, epochs=2, verbose=0)
    for a, b in zip(resumed.variables, uninterrupted.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   atol=1e-6, rtol=0, err_msg=a.path)


def test_schedule_epochs_takes_only_interleaved_datasets():
    mixed = data.interleave({"a": labelled("a", 3), "b": labelled("b", 1)}, "proportional")
    with pytest.raises(ValueError, match=r"datasets\[1\].*the one `interleave` returned"):
        data.ScheduleEpochs(mixed, mixed.map(lambda x, y, sw: (x, y, sw)))
    # Round-robin draws nothing: accepted, nothing to set.
    assert data.ScheduleEpochs(data.interleave({"a": labelled("a", 3)})).epochs == []
    callback = data.ScheduleEpochs(mixed)
    callback.on_epoch_begin(4)
    assert int(mixed.schedule_epoch.numpy()) == 4


def test_same_seed_same_sequence_and_epochs_differ():
    def order(seed):
        ds = data.interleave(
            {"a": labelled("a", 30), "b": labelled("b", 30)}, "proportional", seed=seed)
        return sources_of(ds, ["a", "b"], epochs=2)

    first = order(7)
    assert first == order(7)
    assert first != order(8)
    assert first[:60] != first[60:]  # a new draw each epoch


# --- epoch lengths -----------------------------------------------------------------
@pytest.mark.parametrize(
    "schedule, kwargs, expected",
    [
        # 6 and 2 batches.
        ("round_robin", {"epoch": "longest"}, 12),
        ("round_robin", {"epoch": "shortest"}, 4),
        ("round_robin", {"epoch": "sum"}, 8),
        ("round_robin", {"steps_per_epoch": 5}, 5),
        ("proportional", {"epoch": "longest"}, 8),
        ("proportional", {"epoch": "shortest"}, 8),
        ("proportional", {"epoch": "sum"}, 8),
        # p ∝ √N: 0.634, 0.366; 6 / 0.634 = 9.5, 2 / 0.366 = 5.5.
        ("temperature", {"temperature": 2, "epoch": "longest"}, 10),
        ("temperature", {"temperature": 2, "epoch": "shortest"}, 6),
        ("temperature", {"temperature": 2, "steps_per_epoch": 3}, 3),
        ("annealed", {"num_epochs": 4, "epoch": "longest"}, 8),
        ("annealed", {"num_epochs": 4, "epoch": "shortest"}, 8),
    ],
)
def test_epoch_lengths(schedule, kwargs, expected):
    ds = data.interleave(
        {"a": labelled("a", 6, batch_size=2), "b": labelled("b", 2, batch_size=2)},
        schedule, seed=0, **kwargs,
    )
    assert int(ds.cardinality()) == expected
    assert [sum(1 for _ in ds) for _ in range(2)] == [expected, expected]


def test_round_robin_with_steps_per_epoch_takes_infinite_sources():
    ds = data.interleave(
        {"a": labelled("a", 2).repeat(), "b": labelled("b", 3)}, steps_per_epoch=7)
    assert sources_of(ds, ["a", "b"]) == [0, 1, 0, 1, 0, 1, 0]


# --- the batches ---------------------------------------------------------------------
def test_placeholders_markers_and_sample_weights():
    a = tf.data.Dataset.from_tensor_slices((
        tf.zeros((4, 16, 16, 3)),
        {"age": tf.ones((4,)), "seg": tf.ones((4, 16, 16), tf.int32)},
        {"age": tf.constant([0.5, 1.0, 2.0, 0.0])},  # per task, some tasks only
    )).batch(4)
    b = tf.data.Dataset.from_tensor_slices((
        tf.zeros((3, 16, 16, 3)),
        {"kind": tf.constant([0, 2, 1], tf.int64), "flag": tf.constant([1.0, 0.0, 1.0])},
        tf.constant([[1.0], [3.0], [1.0]]),  # (batch, 1): all of its tasks
    )).batch(3)
    ds = data.interleave({"a": a, "b": b})
    (xa, ya, swa), (xb, yb, swb) = list(ds)
    assert list(ya) == ["age", "seg", "kind", "flag"] and set(swa) == set(ya)
    assert ya["kind"].dtype == tf.int64 and ya["kind"].numpy().tolist() == [-1] * 4
    assert np.isnan(ya["flag"].numpy()).all() and ya["flag"].shape == (4,)
    assert yb["seg"].shape == (3, 16, 16) and (yb["seg"].numpy() == -1).all()
    assert np.isnan(yb["age"].numpy()).all()
    assert swa["age"].numpy().tolist() == [0.5, 1.0, 2.0, 0.0]
    assert swa["seg"].numpy().tolist() == [1.0] * 4
    assert swa["kind"].numpy().tolist() == swa["flag"].numpy().tolist() == [0.0] * 4
    assert swb["flag"].numpy().tolist() == swb["kind"].numpy().tolist() == [1.0, 3.0, 1.0]
    assert swb["age"].dtype == tf.float32 and swb["age"].numpy().tolist() == [0.0] * 3


def test_unbatched_sources_with_batch_size():
    a = shapes.load("train", 6, 16, tasks=["shape"])
    b = shapes.load("train", 4, 16, tasks=["size"], seed=1)
    ds = data.interleave({"a": a, "b": b}, batch_size=2)
    assert int(ds.cardinality()) == 6
    x, y, sw = next(iter(ds))
    assert x.shape == (2, 16, 16, 3) and y["size"].shape == (2,)


def test_map_fn_makes_inputs_agree():
    small = shapes.load("train", 4, 16, tasks=["shape"]).batch(2)
    large = shapes.load("train", 4, 32, tasks=["size"]).batch(2)
    ds = data.interleave(
        {"small": small, "large": large},
        map_fn={"large": lambda x: tf.image.resize(x, (16, 16))},
    )
    assert [tuple(x.shape) for x, _, _ in ds] == [(2, 16, 16, 3)] * 4


VECTOR = [T.Regression("a"), T.Segmentation("s", 3), T.BinaryClassification("b"),
          T.MulticlassClassification("c", 3)]


def _source(tasks, n, seed):
    labels = random_labels(tasks, n, seed=seed)
    return tf.data.Dataset.from_tensor_slices((random_images(n, seed=seed), labels)).batch(n)


@needs_tf
def test_an_interleaved_batch_has_the_gradient_of_its_source_alone():
    trunk = tiny_trunk()
    full = keras_mtl.MultiTaskModel(trunk, VECTOR, head_units=(8,))
    alone = keras_mtl.MultiTaskModel(trunk, VECTOR[:2], head_units=(8,))  # the same trunk
    for name in ("a", "s"):
        alone.heads[name].set_weights(full.heads[name].get_weights())
    full.compile()
    alone.compile()
    first = _source(VECTOR[:2], 4, seed=0)
    ds = data.interleave({"first": first, "second": _source(VECTOR[2:], 4, seed=1)})
    x, y, sample_weight = next(iter(ds))  # from "first": b and c are placeholders

    def gradients(model, variables, x, y, sample_weight=None):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x, y, model(x, training=True), sample_weight)
        return [np.asarray(g) for g in tape.gradient(loss, variables)]

    def labelled_variables(model):
        heads = [v for n in ("a", "s") for v in model.heads[n].trainable_variables]
        return trunk.trainable_variables + heads

    got = gradients(full, labelled_variables(full), x, y, sample_weight)
    expected = gradients(alone, labelled_variables(alone), *next(iter(first)))
    assert len(got) == len(expected) > 4
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
    assert any(np.abs(e).max() > 0 for e in expected)
    unlabelled = [v for n in ("b", "c") for v in full.heads[n].trainable_variables]
    for g in gradients(full, unlabelled, x, y, sample_weight):
        assert np.all(g == 0.0)  # no gradient, and no NaN from the NaN placeholders


@pytest.mark.slow  # long: `make test-slow` runs it
def test_every_weighting_method_steps_on_interleaved_batches():
    """A task without labels in the batch: finite update, its head untouched."""
    first, second = _source(VECTOR[:2], 4, seed=0), _source(VECTOR[2:], 4, seed=1)
    batch = keras.tree.map_structure(
        np.asarray, next(iter(data.interleave({"first": first, "second": second}))))
    arguments = {keras_mtl.weighting.InverseSize: {"counts": dict.fromkeys("asbc", 8)}}
    failures, tested = [], []
    for method in keras_mtl.weighting.methods().values():
        try:
            weighting = method(**arguments.get(method, {}))
        except (TypeError, ValueError):  # a method that needs arguments not known here
            continue
        tested.append(method.__name__)
        model = keras_mtl.MultiTaskModel(tiny_trunk(), VECTOR, head_units=(8,))
        model.compile(optimizer=keras.optimizers.SGD(0.1), weighting=weighting, run_eagerly=True)
        before = {n: [w.copy() for w in model.heads[n].get_weights()] for n in ("b", "c")}
        logs = model.train_on_batch(*batch, return_dict=True)
        finite = all(np.isfinite(w).all() for w in model.get_weights())
        untouched = all(
            np.array_equal(u, v) for n in ("b", "c")
            for u, v in zip(before[n], model.heads[n].get_weights()))
        if not (finite and untouched and np.isfinite(logs["loss"])):
            failures.append((method.__name__, finite, untouched, logs["loss"]))
    assert {"Equal", "InverseSize", "Uncertainty"} <= set(tested)
    assert not failures


# --- fit, History and per-source validation ---------------------------------------------
def _two_shapes_sources(split, n, seed=0):
    return {
        "classes": shapes.load(split, n, 16, tasks=["shape", "count"], seed=seed).batch(8),
        "geometry": shapes.load(split, n, 16, tasks=["size"], seed=seed + 1).batch(8),
    }


SHAPES_TASKS = [T.MulticlassClassification("shape", 3), T.Regression("count"), T.Regression("size")]


def test_plain_fit_has_per_task_and_per_source_metrics_in_history():
    model = keras_mtl.MultiTaskModel(tiny_trunk(), SHAPES_TASKS, head_units=(8,))
    model.compile()
    train = data.interleave(_two_shapes_sources("train", 16), "temperature", temperature=2.0)
    validation = data.SourceValidation(_two_shapes_sources("validation", 8))
    history = model.fit(train, epochs=2, verbose=0, callbacks=[validation])
    keys = set(history.history)
    assert {"loss", "shape_loss", "shape_accuracy", "count_mae", "size_mae"} <= keys
    assert {
        "val_classes_loss", "val_classes_shape_accuracy", "val_classes_count_mae",
        "val_geometry_loss", "val_geometry_size_mae", "val_geometry_size_rmse",
    } <= keys
    assert not any(k.startswith(("val_classes_size", "val_geometry_shape")) for k in keys)
    assert all(len(v) == 2 and np.isfinite(v).all() for v in history.history.values())
    # The per-source numbers are those of evaluating the model on that source.
    alone = model.evaluate(validation._padded["geometry"][0], verbose=0, return_dict=True)
    assert history.history["val_geometry_size_mae"][-1] == pytest.approx(alone["size_mae"])


@pytest.mark.slow
def test_the_offline_demo_runs():
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "shapes_two_sources.py"
    spec = importlib.util.spec_from_file_location("shapes_two_sources", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    history = demo.main([
        "--epochs", "1", "--classes-examples", "24", "--geometry-examples", "8",
        "--validation-examples", "8", "--image-size", "16", "--batch-size", "8",
        "--schedule", "annealed", "--verbose", "0",
    ])
    assert {"val_classes_shape_accuracy", "val_geometry_position_mae"} <= set(history.history)


# --- bad input ---------------------------------------------------------------------
A, B = labelled("a", 2), labelled("b", 2)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([A],), {}, r"argument `datasets`. Expected a non-empty dict"),
        (({},), {}, r"argument `datasets`. Expected a non-empty dict"),
        (({"a": [1, 2]},), {}, r"Expected a `tf.data.Dataset` for each source. Received: "
                               r"datasets\['a'\]=list"),
        (({"a": A}, "x"), {},
         r"argument `schedule`. Expected one of \('round_robin', 'proportional', "
         r"'temperature', 'annealed'\). Received: schedule='x'"),
        (({"a": A}, "temperature"), {}, r"argument `temperature`. Expected a finite float > 0"),
        (({"a": A}, "temperature"), {"temperature": 0}, r"argument `temperature`"),
        (({"a": A},), {"temperature": 2.0}, r"only used with schedule='temperature'"),
        (({"a": A}, "annealed"), {}, r"argument `num_epochs`. schedule='annealed' needs"),
        (({"a": A},), {"num_epochs": 3}, r"only used with schedule='annealed'"),
        (({"a": A},), {"epoch": "all"}, r"argument `epoch`. Expected one of \('longest', "
                                        r"'shortest', 'sum'\). Received: epoch='all'"),
        (({"a": A},), {"steps_per_epoch": 0},
         r"argument `steps_per_epoch`. Expected an integer >= 1"),
        (({"a": A},), {"batch_size": 2.5}, r"argument `batch_size`"),
        (({"a": A},), {"seed": -1}, r"argument `seed`"),
        (({"a": A},), {"sizes": {"z": 3}}, r"argument `sizes`.*unknown keys \['z'\]"),
        (({"a": A},), {"sizes": {"a": 0}}, r"argument `sizes\['a'\]`"),
        (({"a": A},), {"map_fn": "resize"}, r"argument `map_fn`"),
        (({"a": A},), {"map_fn": {"z": tf.identity}}, r"argument `map_fn`"),
        (({"a": A, "b": B.repeat()},), {}, r"size of source 'b'.*cardinality is infinite. "
                                           r"Pass `sizes=\{'b': number_of_batches\}`"),
        (({"a": A, "b": B.filter(lambda x, y: True)}, "proportional"), {"steps_per_epoch": 4},
         r"size of source 'b'.*cardinality is unknown"),
        (({"a": A, "b": labelled("b", 2, features=3)},), {},
         r"source 'a' yields TensorSpec\(shape=\(None, 2\).*source 'b' yields "
         r"TensorSpec\(shape=\(None, 3\).*Pass `map_fn=`"),
        (({"a": A, "b": B.map(lambda x, y: (tf.cast(x, tf.float64), y))},), {},
         r"source 'a' yields .*float32.*source 'b' yields .*float64"),
        (({"a": A, "b": labelled("a", 2, dtype="int32")},), {},
         r"Sources 'a' and 'b' both label task 'a', with different specs"),
        (({"a": tf.data.Dataset.from_tensor_slices((tf.zeros((2, 2)), {"a": tf.zeros((2,))}))},),
         {}, r"Source 'a' looks unbatched \(label 'a' is a scalar.*pass `batch_size=`"),
        (({"a": tf.data.Dataset.range(3)},), {}, r"Expected each source to yield batched"),
        (({"a": A.map(lambda x, y: (x, y["a"]))},), {}, r"labels a non-empty dict keyed by task"),
        (({"a": A.map(lambda x, y: (x, y, {"q": x[:, 0]}))},), {},
         r"sample weights of source 'a' name task 'q'"),
        (({"a": A.map(lambda x, y: (x, y, x))},), {},
         r"per-example sample weights of shape \(batch,\)"),
    ],
)
def test_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.interleave(*args, **kwargs)


def test_a_placeholder_needs_a_static_label_shape():
    ragged = labelled("s", 2).map(lambda x, y: (x, {"s": tf.reshape(y["s"], [1, -1])}))
    with pytest.raises(ValueError, match=r"Sources \['b'\] do not label task 's'"):
        data.interleave({"a": ragged, "b": B})


def test_source_validation_refuses_bad_sources():
    with pytest.raises(ValueError, match=r"Validation sources must be finite; source 'b'"):
        data.SourceValidation({"a": A, "b": B.repeat()})
    with pytest.raises(ValueError, match=r"argument `frequency`"):
        data.SourceValidation({"a": A}, frequency=0)
    with pytest.raises(ValueError, match=r"source 'a' yields .*source 'b' yields"):
        data.SourceValidation({"a": A, "b": labelled("b", 2, features=3)})
