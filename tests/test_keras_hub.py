"""keras-hub backbones, built from their configs (no preset download): an
image backbone (ResNet) and a text backbone (BERT, three inputs and a dict of
outputs) as the shared trunk, with branch points, freezing, tuning cuts,
`.keras` files and SavedModel export."""

import keras
import keras_hub  # `make install` installs it without its dependencies (see the Makefile)
import numpy as np
import pytest

import keras_mtl


def resnet():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(32, 32, 3))


def bert(sequence_length=10):
    return keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=sequence_length)


def images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 32, 32, 3)).astype("float32")
    y = {"shape": rng.integers(0, 3, (n,)), "size": rng.normal(size=(n, 1)).astype("float32"),
         "mask": rng.integers(0, 2, (n, 32, 32))}
    return x, y


def texts(n=16, length=10, seed=0):
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(1, 50, (n, length)).astype("int32"),
         "segment_ids": np.zeros((n, length), "int32"),
         "padding_mask": np.ones((n, length), "int32")}
    y = {"sentiment": rng.integers(0, 2, (n, 1)).astype("float32"),
         "topic": rng.integers(0, 3, (n,))}
    return x, y


IMAGE_TASKS = [keras_mtl.tasks.MulticlassClassification("shape", 3),
               keras_mtl.tasks.Regression("size"),
               keras_mtl.tasks.Segmentation("mask", 2)]
TEXT_TASKS = [keras_mtl.tasks.BinaryClassification("sentiment"),
              keras_mtl.tasks.MulticlassClassification("topic", 3)]


def assert_same_predictions(a, b, x):
    expected, got = a.predict(x, verbose=0), b.predict(x, verbose=0)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)


def test_text_backbone_trains_saves_and_reloads(tmp_path):
    model = keras_mtl.build_model(bert(), TEXT_TASKS, head_units=(8,))
    assert sorted(t.name for t in model.inputs) == ["padding_mask", "segment_ids", "token_ids"]
    assert tuple(model.trunk.output.shape) == (None, 8)  # read at `pooled_output`
    model.compile(optimizer="adam", weighting="pcgrad")
    x, y = texts()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert {"weight_sentiment", "topic_accuracy"} <= set(history.history)
    path = str(tmp_path / "text.keras")
    model.save(path)
    assert_same_predictions(model, keras.models.load_model(path, safe_mode=True), x)


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["uncertainty", "mgda", "nash_mtl"])
def test_text_backbone_under_other_methods(weighting):
    model = keras_mtl.build_model(bert(), TEXT_TASKS, head_units=(8,))
    model.compile(optimizer="adam", weighting=weighting)
    x, y = texts()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.slow
def test_text_backbone_params_mode():
    model = keras_mtl.build_model(bert(), TEXT_TASKS, head_units=(8,))
    model.compile(optimizer="adam", weighting=keras_mtl.weighting.PCGrad(mode="params"))
    x, y = texts()
    before = [np.array(v) for v in model.trunk.trainable_variables]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    moved = [not np.allclose(a, np.array(v)) for a, v in zip(before, model.trunk.trainable_variables)]
    assert sum(moved) > len(moved) // 2


@pytest.mark.slow
def test_text_backbone_exports_with_its_input_names(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from keras_mtl.export import export_saved_model, export_tflite

    model = keras_mtl.build_model(bert(), TEXT_TASKS, head_units=(8,))
    x, _ = texts(4)
    path = export_saved_model(model, str(tmp_path / "serving"))
    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == [
        "padding_mask", "segment_ids", "token_ids"]
    served = signature(**{k: tf.constant(v) for k, v in x.items()})
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(served["topic"], expected["topic"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["sentiment"], expected["sentiment"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"argument `image_bytes`.*several inputs"):
        export_saved_model(model, str(tmp_path / "bytes"), image_bytes=True)
    with pytest.raises(ValueError, match=r"argument `input_name`.*their own names"):
        export_saved_model(model, str(tmp_path / "named"), input_name="text")
    export_tflite(model, str(tmp_path / "text.tflite"))
    with pytest.raises(ValueError, match=r"'int8' is calibrated on images"):
        export_tflite(model, str(tmp_path / "int8.tflite"), quantization="int8",
                      representative_data=np.zeros((2, 10)))


@pytest.mark.slow  # make test stays under 10 minutes; make test-slow runs it
def test_image_backbone_blocks_freeze_and_branch():
    points = [name for _, name in keras_mtl.backbones.cut_points(resnet())]
    assert {"stack0_block0_out", "stack1_block0_out"} <= set(points)
    tasks = [keras_mtl.tasks.MulticlassClassification("shape", 3, attach_at="stack0_block0_out"),
             keras_mtl.tasks.Regression("size")]
    model = keras_mtl.build_model(resnet(), tasks, head_units=(8,),
                                  freeze_blocks=points.index("stack0_block0_out") + 1)
    assert not model.trunk.get_layer("stack0_block0_1_conv").trainable
    assert model.trunk.get_layer("stack1_block0_1_conv").trainable
    assert tuple(model.trunk.output["shape"].shape) == (None, 8, 8, 64)
    frozen = np.array(model.trunk.get_layer("conv1_conv").kernel)
    model.compile(optimizer="adam", weighting="uncertainty")
    x, y = images()
    model.fit(x, {"shape": y["shape"], "size": y["size"]}, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(np.array(model.trunk.get_layer("conv1_conv").kernel), frozen)


@pytest.mark.slow
def test_image_backbone_with_a_dense_task_round_trips_and_exports(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from keras_mtl.export import export_saved_model

    model = keras_mtl.build_model(resnet(), IMAGE_TASKS, head_units=(8,))
    model.compile(optimizer="adam", weighting="mgda")
    x, y = images()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = str(tmp_path / "image.keras")
    model.save(path)
    assert_same_predictions(model, keras.models.load_model(path, safe_mode=True), x)
    served = tf.saved_model.load(export_saved_model(model, str(tmp_path / "serving")))
    out = served.signatures["serve_size"](image=tf.constant(x[:4]))
    np.testing.assert_allclose(out["size"], model.predict(x[:4], verbose=0)["size"],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_tuner_cuts_a_keras_hub_backbone():
    from keras_mtl.tuning.branching import cut_backbone

    trunk = cut_backbone(resnet(), 0.5)
    assert trunk.output.shape[1:] == (8, 8, 64)
    model = keras_mtl.build_model(trunk, IMAGE_TASKS[:2], head_units=(4,))
    x, _ = images(2)
    assert model.predict(x, verbose=0)["shape"].shape == (2, 3)
