"""Tests for `keras_mtl.datasets.shapes` and its TFDS builder."""

import sys

import numpy as np
import pytest

from keras_mtl.datasets import shapes

S = 32


@pytest.fixture(scope="module")
def scenes():
    return shapes.generate("train", num_examples=200, image_size=S, return_scenes=True)


@pytest.mark.slow  # make test stays under 10 minutes; make test-slow runs it
def test_importing_datasets_does_not_import_tfds():
    # A fresh interpreter: this test session may have imported tfds already.
    import subprocess

    code = (
        "import sys, keras_mtl.datasets; "
        "assert 'tensorflow_datasets' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generate_dtypes_and_shapes(scenes):
    images, labels, _ = scenes
    n = 200
    assert images.shape == (n, S, S, 3) and images.dtype == np.float32
    expected = {
        "shape": (np.int32, (n,)),
        "count": (np.float32, (n,)),
        "size": (np.float32, (n,)),
        "position": (np.float32, (n, 2)),
        "segmentation": (np.int32, (n, S, S)),
        "depth": (np.float32, (n, S, S, 1)),
    }
    assert list(labels) == list(shapes.TASKS)
    for name, (dtype, shape) in expected.items():
        assert labels[name].dtype == dtype, name
        assert labels[name].shape == shape, name


def test_load_element_spec():
    ds = shapes.load("validation", num_examples=3, image_size=S)
    image, labels = next(iter(ds))
    assert image.dtype.name == "float32" and tuple(image.shape) == (S, S, 3)
    assert labels["shape"].dtype.name == "int32" and labels["shape"].shape == ()
    assert labels["count"].dtype.name == "float32" and labels["count"].shape == ()
    assert labels["size"].dtype.name == "float32" and labels["size"].shape == ()
    assert tuple(labels["position"].shape) == (2,)
    assert labels["segmentation"].dtype.name == "int32"
    assert tuple(labels["segmentation"].shape) == (S, S)
    assert tuple(labels["depth"].shape) == (S, S, 1)
    assert len(list(ds)) == 3
    images, numpy_labels = shapes.generate("validation", 3, S)
    np.testing.assert_array_equal(image.numpy(), images[0])
    np.testing.assert_array_equal(labels["depth"].numpy(), numpy_labels["depth"][0])


def test_value_ranges(scenes):
    images, labels, _ = scenes
    assert images.min() >= 0 and images.max() <= 255
    np.testing.assert_array_equal(images, np.round(images))  # uint8-safe
    assert set(np.unique(labels["shape"])) == {0, 1, 2}
    assert set(np.unique(labels["count"])) == {1.0, 2.0, 3.0}
    assert labels["size"].min() >= shapes.MIN_SIZE
    assert labels["size"].max() <= shapes.MAX_SIZE
    half = labels["size"][:, None] / 2
    assert (labels["position"] - half >= -1e-6).all()
    assert (labels["position"] + half <= 1 + 1e-6).all()
    assert set(np.unique(labels["segmentation"])) == {0, 1, 2, 3}
    depth = labels["depth"]
    shape_depth = depth[depth < 1.0]
    assert shape_depth.min() >= shapes.MIN_DEPTH
    assert shape_depth.max() <= shapes.MAX_DEPTH
    assert len(shapes.CLASS_NAMES) == 3 and shapes.NUM_SEGMENTATION_CLASSES == 4


def test_segmentation_consistent_with_depth(scenes):
    _, labels, _ = scenes
    seg = labels["segmentation"]
    depth = labels["depth"][..., 0]
    np.testing.assert_array_equal(depth[seg == 0], 1.0)
    assert (depth[seg > 0] < 1.0).all()
    # Every image shows its background and at least one shape.
    assert ((seg == 0).reshape(len(seg), -1).any(axis=1)).all()
    assert ((seg > 0).reshape(len(seg), -1).any(axis=1)).all()


def test_visible_pixels_belong_to_nearest_shape(scenes):
    images, labels, meta = scenes
    for i in range(len(images)):
        seg = labels["segmentation"][i]
        depth = labels["depth"][i, ..., 0]
        present = meta["classes"][i] >= 0
        assert present.sum() == labels["count"][i]
        for slot in np.flatnonzero(present):
            at_slot = depth == meta["depths"][i, slot]
            # Class and colour of each visible pixel are those of its shape.
            assert (seg[at_slot] == 1 + meta["classes"][i, slot]).all()
            assert (images[i][at_slot] == np.round(meta["colours"][i, slot])).all()
        # The nearest shape is never hidden: its full area is visible.
        nearest = np.flatnonzero(present)[np.argmin(meta["depths"][i][present])]
        visible = (depth == meta["depths"][i, nearest]).sum()
        side = meta["sizes"][i, nearest] * S
        area = {0: np.pi * side**2 / 4, 1: side**2, 2: side**2 / 2}
        expected = area[int(meta["classes"][i, nearest])]
        assert abs(visible - expected) <= 0.1 * expected + 2 * side


def test_scalar_labels_describe_largest_shape(scenes):
    _, labels, meta = scenes
    rows = np.arange(len(meta["largest"]))
    largest = meta["largest"]
    np.testing.assert_array_equal(meta["sizes"].argmax(axis=1), largest)
    np.testing.assert_array_equal(labels["shape"], meta["classes"][rows, largest])
    np.testing.assert_allclose(labels["size"], meta["sizes"].max(axis=1))
    np.testing.assert_allclose(labels["position"], meta["centres"][rows, largest])


@pytest.mark.parametrize("cls", [0, 1, 2])
def test_single_shape_scene_is_drawn_where_labels_say(cls):
    s = 64
    images, labels = shapes.generate("train", 400, s, seed=1)
    pick = np.flatnonzero((labels["count"] == 1) & (labels["shape"] == cls))
    assert len(pick) > 5
    for i in pick[:10]:
        seg = labels["segmentation"][i]
        assert set(np.unique(seg)) == {0, 1 + cls}
        ys, xs = np.nonzero(seg)
        side = labels["size"][i] * s
        # Bounding box of the mask matches the size label (within a pixel).
        assert abs((xs.max() - xs.min() + 1) - side) <= 1.5
        assert abs((ys.max() - ys.min() + 1) - side) <= 1.5
        area = {0: np.pi * side**2 / 4, 1: side**2, 2: side**2 / 2}[cls]
        assert abs(len(xs) - area) <= 0.1 * area + 2 * side
        cx, cy = labels["position"][i] * s
        # A triangle with its apex up has its centroid a sixth of the side low.
        drop = side / 6 if cls == 2 else 0.0
        assert abs(xs.mean() + 0.5 - cx) < 1.0
        assert abs(ys.mean() + 0.5 - (cy + drop)) < 1.0
        if cls == 2:
            # Rows widen from the apex down to the base.
            widths = (seg > 0).sum(axis=1)[ys.min() : ys.max() + 1]
            assert widths[0] < widths[-1] / 3
            assert (np.diff(widths) >= 0).all()


def test_deterministic_per_seed():
    a_images, a_labels = shapes.generate("train", 70, S, seed=3)
    b_images, b_labels = shapes.generate("train", 70, S, seed=3)
    np.testing.assert_array_equal(a_images, b_images)
    for name in shapes.TASKS:
        np.testing.assert_array_equal(a_labels[name], b_labels[name])
    c_images, _ = shapes.generate("train", 70, S, seed=4)
    assert not np.array_equal(a_images, c_images)


def test_smaller_num_examples_is_a_prefix():
    big_images, big_labels = shapes.generate("test", 130, S)
    small_images, small_labels = shapes.generate("test", 5, S)
    np.testing.assert_array_equal(small_images, big_images[:5])
    np.testing.assert_array_equal(small_labels["depth"], big_labels["depth"][:5])


def test_splits_differ():
    data = {s: shapes.generate(s, 20, S)[0] for s in shapes.SPLITS}
    assert not np.array_equal(data["train"], data["validation"])
    assert not np.array_equal(data["train"], data["test"])
    assert not np.array_equal(data["validation"], data["test"])
    flat = {s: {img.tobytes() for img in imgs} for s, imgs in data.items()}
    assert not flat["train"] & flat["validation"]
    assert not flat["train"] & flat["test"]


def test_tasks_selects_and_orders_labels():
    _, labels = shapes.generate("train", 2, S, tasks=("depth", "shape"))
    assert list(labels) == ["depth", "shape"]
    ds = shapes.load("train", 2, S, tasks=["count"])
    _, ds_labels = ds.element_spec
    assert list(ds_labels) == ["count"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "val"}, r"argument `split`.*Received: split='val'"),
        ({"num_examples": 0}, r"argument `num_examples`.*>= 1.*num_examples=0"),
        ({"num_examples": 2.5}, r"argument `num_examples`.*num_examples=2.5"),
        ({"image_size": 8}, r"argument `image_size`.*>= 16.*image_size=8"),
        ({"image_size": "64"}, r"argument `image_size`.*image_size='64'"),
        ({"seed": -1}, r"argument `seed`.*seed=-1"),
        (
            {"tasks": ["foo"]},
            r"argument `tasks`. Expected distinct names from \('shape', .*"
            r"Received: tasks=\['foo'\]",
        ),
        ({"tasks": "shape"}, r"argument `tasks`.*Received: tasks='shape'"),
        ({"tasks": []}, r"argument `tasks`.*Received: tasks=\[\]"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shapes.generate(**kwargs)
    with pytest.raises(ValueError, match=match):
        shapes.load(**kwargs)


def test_tfds_builder_matches_generate(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    import keras_mtl.datasets.shapes_tfds  # noqa: F401 (registers the builder)

    assert "keras_mtl_shapes" in tfds.list_builders()
    builder = tfds.builder("keras_mtl_shapes/small", data_dir=str(tmp_path))
    assert str(builder.version) == "1.0.0"
    builder.download_and_prepare()
    splits = builder.info.splits
    assert {k: splits[k].num_examples for k in shapes.SPLITS} == {
        "train": 64,
        "validation": 16,
        "test": 16,
    }
    ds = builder.as_dataset(split="validation", shuffle_files=False)
    loaded = list(tfds.as_numpy(ds))
    images, labels = shapes.generate("validation", 16, 32)
    assert len(loaded) == 16
    for i, example in enumerate(loaded):
        assert example["image"].dtype == np.uint8
        np.testing.assert_array_equal(example["image"].astype(np.float32), images[i])
        for name in shapes.TASKS:
            np.testing.assert_array_equal(example[name], labels[name][i])
    # The same data through tfds.load, offline, from the prepared directory.
    ds = tfds.load("keras_mtl_shapes/small", split="test", data_dir=str(tmp_path))
    assert ds.element_spec["segmentation"].shape == (32, 32)


def test_tfds_default_config_sizes():
    pytest.importorskip("tensorflow_datasets")
    from keras_mtl.datasets import shapes_tfds

    config = shapes_tfds.KerasMtlShapes.builder_configs["default"]
    assert config.image_size == 64
    assert config.split_sizes == {"train": 2000, "validation": 500, "test": 500}
    assert shapes_tfds.KerasMtlShapes.name == "keras_mtl_shapes"
