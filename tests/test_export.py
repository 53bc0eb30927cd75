"""Tests of `keras_mtl.export`: SavedModel for TF Serving, REST bodies, TFLite."""

import io
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import keras_mtl
from keras_mtl import export
from keras_mtl.datasets import shapes
from keras_mtl.tasks import (
    BinaryClassification,
    DenseRegression,
    MulticlassClassification,
    MultilabelClassification,
    Regression,
    Segmentation,
)

from conftest import random_images, tiny_model

SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
COLOURS = ["red", "green", "blue"]
SHAPE_NAMES = list(shapes.CLASS_NAMES)
REGION_NAMES = ["background", *SHAPE_NAMES]


def all_tasks():
    return [
        MulticlassClassification("shape", 3, class_names=SHAPE_NAMES),
        MulticlassClassification("colour", 3),  # no names: ids only
        BinaryClassification("big"),
        MultilabelClassification("tags", 3, label_names=COLOURS),
        Regression("position", units=2),
        Segmentation("regions", 4, class_names=REGION_NAMES),
        DenseRegression("depth"),
    ]


@pytest.fixture(scope="module")
def hydra():
    """A model of every task kind, compiled with a weighting method and an
    optimizer whose variables exist: training state the export must leave out."""
    keras.utils.set_random_seed(1)
    model = tiny_model(all_tasks())
    model.compile(optimizer="adam", weighting=keras_mtl.weighting.Uncertainty())
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.fixture(scope="module")
def small():
    """A one-task model: quick to export, for the layout and error tests."""
    keras.utils.set_random_seed(2)
    return tiny_model([Regression("size")])


@pytest.fixture(scope="module")
def exported(hydra, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "hydranet"
    path = export.export_saved_model(hydra, base, image_bytes=True)
    return path, tf.saved_model.load(path)


def saved_variable_names(path):
    """Names of the variables stored in a SavedModel's object graph."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    nodes = proto.meta_graphs[0].object_graph_def.nodes
    return [n.variable.name for n in nodes if n.WhichOneof("kind") == "variable"]


def max_abs_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# --- layout -------------------------------------------------------------------------
def test_export_writes_tf_serving_version_directories(small, tmp_path):
    base = tmp_path / "hydranet"
    first = export.export_saved_model(small, base)
    second = export.export_saved_model(small, base)
    assert first == str(base / "1") and second == str(base / "2")
    assert os.path.isfile(os.path.join(first, "saved_model.pb"))
    assert os.path.isdir(os.path.join(first, "variables"))
    # An explicit version, and a path that is a version directory already.
    assert export.export_saved_model(small, base, version=7) == str(base / "7")
    assert export.export_saved_model(small, tmp_path / "m" / "3") == str(tmp_path / "m" / "3")
    assert export.export_saved_model(small, base) == str(base / "8")
    # Nothing but version directories: no temporary leftovers.
    assert sorted(os.listdir(base)) == ["1", "2", "7", "8"]
    images = random_images(2)
    served = tf.saved_model.load(str(base / "8"))
    out = served.signatures["serve_size"](image=tf.constant(images))
    assert max_abs_diff(out["size"], small.predict(images, verbose=0)["size"]) <= 1e-5


def test_signatures_inputs_and_outputs_are_named(exported):
    _, served = exported
    tasks = [t.name for t in all_tasks()]
    assert sorted(served.signatures) == sorted(
        ["serving_default", "serving_bytes"] + [f"serve_{t}" for t in tasks]
    )
    default = served.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["image"]
    assert default.structured_input_signature[1]["image"].shape.as_list() == [None, 16, 16, 3]
    assert set(default.structured_outputs) == {
        "shape", "shape_class_ids", "shape_class_names",
        "colour", "colour_class_ids",
        "big", "big_class_ids",
        "tags", "tags_labels", "tags_label_names",
        "position",
        "regions", "regions_class_ids", "regions_class_names",
        "depth",
    }
    assert set(served.signatures["serve_position"].structured_outputs) == {"position"}
    assert set(served.signatures["serve_shape"].structured_outputs) == {
        "shape", "shape_class_ids", "shape_class_names"}
    assert list(served.signatures["serving_bytes"].structured_input_signature[1]) == ["image_bytes"]


def test_every_signature_matches_keras_predict(hydra, exported):
    _, served = exported
    images = random_images(5, seed=3)
    expected = hydra.predict(images, verbose=0)
    default = served.signatures["serving_default"](image=tf.constant(images))
    for task in all_tasks():
        name = task.name
        assert max_abs_diff(default[name], expected[name]) <= 1e-5, name
        one = served.signatures[f"serve_{name}"](image=tf.constant(images))
        assert max_abs_diff(one[name], expected[name]) <= 1e-5, name
        # The task signature gives exactly the default signature's outputs for the task.
        for key, value in one.items():
            np.testing.assert_array_equal(value.numpy(), default[key].numpy())

    # Post-processing in the graph.
    for name in ("shape", "colour", "regions"):
        np.testing.assert_array_equal(
            default[f"{name}_class_ids"].numpy(), np.argmax(expected[name], -1))
    np.testing.assert_array_equal(
        default["shape_class_names"].numpy().astype(str),
        np.array(SHAPE_NAMES)[np.argmax(expected["shape"], -1)])
    np.testing.assert_array_equal(
        default["regions_class_names"].numpy().astype(str),
        np.array(REGION_NAMES)[np.argmax(expected["regions"], -1)])
    assert default["regions_class_names"].shape == (5, 16, 16)
    np.testing.assert_array_equal(
        default["big_class_ids"].numpy(), (expected["big"][:, 0] >= 0.5).astype(int))
    on = expected["tags"] >= 0.5
    np.testing.assert_array_equal(default["tags_labels"].numpy(), on.astype(int))
    np.testing.assert_array_equal(
        default["tags_label_names"].numpy().astype(str),
        np.where(on, np.array(COLOURS)[None], ""))


def test_threshold_sets_binary_and_multilabel_decisions(hydra, tmp_path):
    images = random_images(6, seed=4)
    expected = hydra.predict(images, verbose=0)
    path = export.export_saved_model(hydra, tmp_path / "1", threshold=0.9, task_signatures=[])
    out = tf.saved_model.load(path).signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_array_equal(out["big_class_ids"].numpy(), expected["big"][:, 0] >= 0.9)
    np.testing.assert_array_equal(out["tags_labels"].numpy(), expected["tags"] >= 0.9)


def test_bytes_signature_decodes_png_and_jpeg(hydra, exported):
    _, served = exported
    images = np.round(random_images(3, seed=5))  # whole numbers: PNG is lossless
    expected = hydra.predict(images, verbose=0)
    png = [tf.io.encode_png(im.astype(np.uint8)).numpy() for im in images]
    out = served.signatures["serving_bytes"](image_bytes=tf.constant(png))
    for task in all_tasks():
        assert max_abs_diff(out[task.name], expected[task.name]) <= 1e-5, task.name
    # A JPEG of another size is decoded and resized to the model's 16x16.
    big = np.random.default_rng(0).integers(0, 255, (40, 24, 3), dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(big).numpy()
    out = served.signatures["serving_bytes"](image_bytes=tf.constant([jpeg, png[0]]))
    assert out["regions"].shape == (2, 16, 16, 4) and out["shape_class_names"].shape == (2,)


def test_only_inference_variables_are_saved(hydra, exported):
    path, served = exported
    names = saved_variable_names(path)
    inference = hydra.trunk.variables + [v for h in hydra.heads.values() for v in h.variables]
    # Every variable the forward pass reads, and nothing else.
    assert len(names) == len(inference)
    assert sorted(names) == sorted(v.path for v in inference)
    weighting = [v.path for v in hydra.weighting.variables]
    assert weighting == [f"{hydra.weighting.name}/log_variances"]  # uncertainty[_N]
    assert not set(weighting) & set(names)
    assert len(hydra.variables) > len(inference)  # the model holds the weighting's too
    optimizer = [v.path for v in hydra.optimizer.variables]
    assert len(optimizer) > 2 * len(hydra.trainable_variables)  # moments, iterations
    assert not set(optimizer) & set(names)


# --- saved_model_cli ----------------------------------------------------------------
@pytest.mark.slow  # long: `make test-slow` runs it
def test_saved_model_cli_show_and_run(hydra, exported, tmp_path):
    path, _ = exported
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    show = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", path, "--all"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    ).stdout
    assert "signature_def['serving_default']" in show
    assert "signature_def['serve_regions']" in show
    assert "inputs['image'] tensor_info" in show
    assert "outputs['shape_class_names'] tensor_info" in show and "dtype: DT_STRING" in show

    images = random_images(2, seed=6)
    np.save(tmp_path / "images.npy", images)
    outdir = tmp_path / "out"
    subprocess.run(
        [SAVED_MODEL_CLI, "run", "--dir", path, "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"image={tmp_path / 'images.npy'}",
         "--outdir", str(outdir)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )
    expected = hydra.predict(images, verbose=0)
    for name in ("shape", "position", "regions", "depth"):
        assert max_abs_diff(np.load(outdir / f"{name}.npy"), expected[name]) <= 1e-5
    np.testing.assert_array_equal(
        np.load(outdir / "shape_class_ids.npy"), np.argmax(expected["shape"], -1))


# --- TF Serving REST bodies ---------------------------------------------------------
def test_rest_row_format(hydra, exported):
    _, served = exported
    images = random_images(3, seed=7)
    expected = hydra.predict(images, verbose=0)
    body = json.dumps({"instances": images.tolist()})
    response = export.rest_predict(served, body)
    json.dumps(response)  # JSON-serialisable, as the server's answer
    predictions = response["predictions"]
    assert len(predictions) == 3
    assert set(predictions[0]) == set(served.signatures["serving_default"].structured_outputs)
    for i, row in enumerate(predictions):
        assert max_abs_diff(row["shape"], expected["shape"][i]) <= 1e-5
        assert row["shape_class_names"] == SHAPE_NAMES[int(np.argmax(expected["shape"][i]))]
        assert isinstance(row["shape_class_ids"], int)
        assert np.shape(row["regions_class_names"]) == (16, 16)
        assert np.shape(row["depth"]) == (16, 16, 1)
    # Named instances ({input: value}) and a task signature with one output:
    # TF Serving then omits the output's name.
    response = export.rest_predict(served, {
        "signature_name": "serve_position",
        "instances": [{"image": im} for im in images.tolist()],
    })
    assert max_abs_diff(response["predictions"], expected["position"]) <= 1e-5


def test_rest_columnar_format(hydra, exported):
    _, served = exported
    images = random_images(2, seed=8)
    expected = hydra.predict(images, verbose=0)
    response = export.rest_predict(served, {"inputs": {"image": images.tolist()}})
    outputs = response["outputs"]
    assert set(outputs) == set(served.signatures["serving_default"].structured_outputs)
    assert np.shape(outputs["regions"]) == (2, 16, 16, 4)
    assert max_abs_diff(outputs["tags"], expected["tags"]) <= 1e-5
    assert outputs["shape_class_names"] == [
        SHAPE_NAMES[i] for i in np.argmax(expected["shape"], -1)]
    # A single input may be given without its name; one output without its name.
    response = export.rest_predict(
        served, {"signature_name": "serve_depth", "inputs": images.tolist()})
    assert max_abs_diff(response["outputs"], expected["depth"]) <= 1e-5


def test_rest_b64_images(hydra, exported):
    import base64

    _, served = exported
    images = np.round(random_images(2, seed=9))
    expected = hydra.predict(images, verbose=0)
    encoded = [
        {"b64": base64.b64encode(tf.io.encode_png(im.astype(np.uint8)).numpy()).decode()}
        for im in images
    ]
    rows = export.rest_predict(served, {"signature_name": "serving_bytes", "instances": encoded})
    named = export.rest_predict(served, {
        "signature_name": "serving_bytes",
        "instances": [{"image_bytes": e} for e in encoded]})
    columns = export.rest_predict(served, {
        "signature_name": "serving_bytes", "inputs": {"image_bytes": encoded}})
    assert rows == named
    for i in range(2):
        assert max_abs_diff(rows["predictions"][i]["shape"], expected["shape"][i]) <= 1e-5
    assert max_abs_diff(columns["outputs"]["shape"], expected["shape"]) <= 1e-5


@pytest.mark.parametrize("body, match", [
    ({"instances": [], "inputs": []}, "exactly one of 'instances'"),
    ({}, "exactly one of 'instances'"),
    ({"signature_name": "serve_age", "instances": [[0]]}, "no signature 'serve_age'"),
    ({"instances": [{"pixels": [0]}]}, r"instance 0 has the inputs \['pixels'\]"),
    ({"instances": [[[0.0] * 3] * 16]}, r"input 'image' expects shape \(None, 16, 16, 3\)"),
    ({"inputs": {"img": [0]}}, r"takes the inputs \['image'\]"),
    ({"inputs": "pixels"}, r"input 'image' expects float32 values"),
    ([1, 2], "Expected a JSON object"),
])
def test_rest_bad_requests(exported, body, match):
    _, served = exported
    with pytest.raises(ValueError, match=match):
        export.rest_predict(served, body)


# --- bad input ---------------------------------------------------------------------
def test_refuses_a_non_empty_directory_unless_overwrite(small, tmp_path):
    target = tmp_path / "1"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"already exists and is not empty. Pass `overwrite=True`"):
        export.export_saved_model(small, target)
    assert os.listdir(target) == ["notes.txt"]
    export.export_saved_model(small, target, overwrite=True)
    assert sorted(os.listdir(target)) == sorted(["assets", "fingerprint.pb", "saved_model.pb",
                                                  "variables"])
    assert sorted(os.listdir(tmp_path)) == ["1"]
    # An existing empty directory is fine.
    (tmp_path / "2").mkdir()
    export.export_saved_model(small, tmp_path / "2")
    assert "saved_model.pb" in os.listdir(tmp_path / "2")


def test_a_failed_export_leaves_nothing_behind(small, tmp_path, monkeypatch):
    target = tmp_path / "hydranet" / "1"

    def failing_save(obj, export_dir, *args, **kwargs):
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half")  # a half-written export
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(small, target)
    assert os.listdir(tmp_path / "hydranet") == []
    # Replacing a version that fails keeps the old version intact.
    monkeypatch.undo()
    export.export_saved_model(small, target)
    before = sorted(os.listdir(target))
    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(small, target, overwrite=True)
    assert sorted(os.listdir(target)) == before
    assert os.listdir(tmp_path / "hydranet") == ["1"]
    monkeypatch.undo()
    tf.saved_model.load(str(target))


def test_rejects_models_that_are_not_built_multi_task_models(hydra, tmp_path, monkeypatch):
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"Expected a `keras_mtl.MultiTaskModel`.*Sequential"):
        export.export_saved_model(plain, tmp_path / "1")
    with pytest.raises(ValueError, match=r"Expected a `keras_mtl.MultiTaskModel`"):
        export.export_tflite(plain, tmp_path / "m.tflite")
    monkeypatch.setattr(hydra, "built", False)
    with pytest.raises(ValueError, match="never built"):
        export.export_saved_model(hydra, tmp_path / "1")
    assert not os.path.exists(tmp_path / "1")


@pytest.mark.parametrize("kwargs, match", [
    ({"task_signatures": ["size", "age"]}, r"unknown task names \['age'\]"),
    ({"task_signatures": "shape"}, "Expected None .one signature per task. or a list"),
    ({"version": -1}, r"Expected None or an integer >= 0.*version=-1"),
    ({"version": "2"}, r"version='2'"),
    ({"input_name": "my image"}, r"input_name='my image'"),
    ({"threshold": 1.0}, r"Expected a float in \(0, 1\). Received: threshold=1.0"),
    ({"image_bytes": "yes"}, r"image_bytes='yes'"),
    ({"overwrite": 1}, r"overwrite=1"),
])
def test_bad_arguments(small, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export.export_saved_model(small, tmp_path / "base", **kwargs)
    assert not os.path.exists(tmp_path / "base")


def test_bad_class_names_and_inputs(tmp_path):
    model = tiny_model([Segmentation("regions", 3, class_names=["a", "b"])])
    with pytest.raises(ValueError, match=r"'regions': it has 2 class names for 3 outputs"):
        export.export_saved_model(model, tmp_path / "1")
    vectors = keras_mtl.MultiTaskModel(
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)]),
        [Regression("y")], head_units=(4,))
    with pytest.raises(ValueError, match=r"argument `image_bytes`.*shape \(6,\)"):
        export.export_saved_model(vectors, tmp_path / "2", image_bytes=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        export.export_saved_model(vectors, tmp_path / "file")


# --- TFLite ------------------------------------------------------------------------
def run_tflite(path, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    return runner(image=images.astype(np.float32))


@pytest.mark.slow  # make test stays under 10 minutes; make test-slow runs it
def test_tflite_matches_keras(hydra, tmp_path):
    images = random_images(4, seed=10)
    expected = hydra.predict(images, verbose=0)
    path = export.export_tflite(hydra, tmp_path / "m.tflite")
    assert path == str(tmp_path / "m.tflite") and os.listdir(tmp_path) == ["m.tflite"]
    outputs = run_tflite(path, images)
    assert set(outputs) == {t.name for t in all_tasks()}
    for name, value in expected.items():
        assert outputs[name].shape == value.shape
        assert max_abs_diff(outputs[name], value) <= 1e-5, name
    # Full int8: every head kind has int8 kernels; outputs stay float32.
    # Calibration data as a dataset of batched (images, labels), as fit takes it.
    calibration = tf.data.Dataset.from_tensor_slices(
        (random_images(32, seed=11), np.zeros(32))).batch(8)
    path = export.export_tflite(hydra, tmp_path / "int8.tflite", quantization="int8",
                                representative_data=calibration)
    outputs = run_tflite(path, images)
    for name, value in expected.items():
        assert outputs[name].dtype == np.float32 and outputs[name].shape == value.shape
        mean_error = float(np.mean(np.abs(outputs[name] - value)))
        assert mean_error <= 0.05 * max(1.0, float(np.max(np.abs(value)))), (name, mean_error)


def test_tflite_bad_arguments(hydra, tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"Expected one of \(None, 'dynamic', 'float16', 'int8'\)"):
        export.export_tflite(hydra, path, quantization="int4")
    with pytest.raises(ValueError,
                       match=r"quantization='int8' calibrates.*representative_data=None"):
        export.export_tflite(hydra, path, quantization="int8")
    with pytest.raises(ValueError, match=r"used by quantization='int8' only.*'float16'"):
        export.export_tflite(hydra, path, quantization="float16",
                             representative_data=random_images(2))
    with pytest.raises(ValueError, match=r"Expected images of shape \(16, 16, 3\).*\(2, 8, 8, 3\)"):
        export.export_tflite(hydra, path, quantization="int8",
                             representative_data=np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"Expected images of shape.*element_spec"):
        export.export_tflite(hydra, path, quantization="int8",
                             representative_data=tf.data.Dataset.range(3))
    with pytest.raises(ValueError, match=r"ending with '.tflite'"):
        export.export_tflite(hydra, tmp_path / "m.bin")
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="already exists. Pass `overwrite=True`"):
        export.export_tflite(hydra, path)
    assert path.read_bytes() == b"old"
    export.export_tflite(hydra, path, overwrite=True)
    assert path.read_bytes()[4:8] == b"TFL3"  # the flat buffer's file identifier
    assert os.listdir(tmp_path) == ["m.tflite"]


def evaluate(tasks, labels, predictions):
    """Each task's metrics (`task.metrics()`) of `predictions` on `labels`."""
    results = {}
    for task in tasks:
        y, _, _, _ = task.prepare_labels(labels[task.name])
        for metric in task.metrics():
            metric.update_state(y, predictions[task.name])
            results[f"{task.name}_{metric.name}"] = float(metric.result())
    return results


def shapes_trunk(image_size):
    """Two stride-2 convolutions on rescaled pixels: cheap to train."""
    images = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(images)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(images, x, name="trunk")


def metric_drops(tmp_path, trunk, examples, epochs, learning_rate):
    """Trains a model on shapes, then scores each task's metrics with Keras and
    with each TFLite quantization. Returns (reference, drops, baselines, table)."""
    keras.utils.set_random_seed(0)
    tasks = [
        MulticlassClassification("shape", 3, class_names=SHAPE_NAMES),
        Regression("size", loss="mae"),
        Segmentation("segmentation", 4, class_names=REGION_NAMES),
        DenseRegression("depth"),
    ]
    names = [t.name for t in tasks]
    higher = {f"{t.name}_{m}": h for t in tasks for m, h in t.higher_is_better.items()}
    model = keras_mtl.build_model(trunk, tasks, head_units=(16,))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    x, y = shapes.generate("train", examples, 32, tasks=names)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    images, labels = shapes.generate("test", 128, 32, tasks=names)
    predictions = model.predict(images, verbose=0)
    reference = evaluate(tasks, labels, predictions)
    # Outputs that differ from scene to scene, so quantisation errors show.
    for name in names:
        assert np.std(predictions[name], axis=0).max() > 1e-3, name

    drops, sizes = {}, {}
    for quantization in export.QUANTIZATIONS:
        path = export.export_tflite(
            model, tmp_path / f"{quantization}.tflite", quantization=quantization,
            representative_data=x[:64] if quantization == "int8" else None)
        sizes[quantization] = os.path.getsize(path) / 1024
        scores = evaluate(tasks, labels, run_tflite(path, images))
        # Positive: TFLite is worse (lower accuracy, larger error).
        drops[quantization] = {
            k: (reference[k] - scores[k]) * (1 if higher[k] else -1) for k in reference}

    table = io.StringIO()
    table.write(f"\nTFLite vs Keras on shapes ({examples} training scenes x {epochs} epochs, "
                "128 test scenes, 32 px): the Keras metric, then each TFLite model's drop "
                "(positive: worse than Keras):\n")
    table.write(f"| {'metric':<28} | {'keras':>7} |" + "".join(
        f" {str(q):>8} |" for q in export.QUANTIZATIONS) + "\n")
    for key, value in reference.items():
        table.write(f"| {key:<28} | {value:7.4f} |" + "".join(
            f" {drops[q][key]:+8.4f} |" for q in export.QUANTIZATIONS) + "\n")
    table.write(f"| {'file size (KiB)':<28} | {'':>7} |" + "".join(
        f" {sizes[q]:8.1f} |" for q in export.QUANTIZATIONS) + "\n")
    baselines = {  # a constant predictor's error: what "learned nothing" scores
        "depth_mae": float(np.mean(np.abs(labels["depth"] - labels["depth"].mean()))),
        "size_mae": float(np.mean(np.abs(labels["size"] - labels["size"].mean()))),
    }
    table.write(f"constant-predictor baselines: {baselines}\n")
    return reference, drops, baselines, table.getvalue()


def check_drops(reference, drops):
    assert all(abs(d) <= 1e-5 for d in drops[None].values()), drops[None]
    assert all(abs(d) <= 0.01 for d in drops["float16"].values()), drops["float16"]
    for quantization in ("dynamic", "int8"):
        for key, drop in drops[quantization].items():
            # Accuracies and IoU lose at most 5 points; errors grow by at most 10 %.
            bound = 0.05 if key.endswith(("accuracy", "miou")) else 0.1 * reference[key]
            assert drop <= bound, (quantization, key, drop)


@pytest.mark.slow  # long: `make test-slow` runs it
def test_tflite_metric_drop_on_shapes(tmp_path, capsys):
    """Each task's metric, Keras vs TFLite, on a small model hydra on shapes."""
    reference, drops, _, table = metric_drops(
        tmp_path, shapes_trunk(32), examples=128, epochs=2, learning_rate=1e-2)
    with capsys.disabled():
        print(table)
    check_drops(reference, drops)


@pytest.mark.slow
def test_tflite_metric_drop_on_shapes_trained_longer(tmp_path, capsys):
    """The same, on the demo's model hydra as the demo does (about a minute
    on 2 cores): shapes classified well above chance."""
    from keras_mtl.demo import demo_trunk

    reference, drops, baselines, table = metric_drops(
        tmp_path, demo_trunk((32, 32, 3)), examples=3072, epochs=6, learning_rate=1e-3)
    with capsys.disabled():
        print(table)
    assert reference["shape_accuracy"] > 0.5, reference
    assert reference["depth_mae"] < baselines["depth_mae"], (reference, baselines)
    check_drops(reference, drops)
