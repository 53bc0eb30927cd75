"""Tests for `keras_mtl.datasets.digit_pairs`."""

import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from keras_mtl.datasets import digit_pairs  # noqa: E402


def test_source_splits_partition_the_digits():
    indices = {s: digit_pairs.source_indices(s) for s in digit_pairs.SPLITS}
    assert [len(indices[s]) for s in digit_pairs.SPLITS] == [1258, 270, 269]
    assert not set(indices["train"]) & set(indices["validation"])
    assert not set(indices["train"]) & set(indices["test"])
    assert not set(indices["validation"]) & set(indices["test"])
    union = np.concatenate(list(indices.values()))
    np.testing.assert_array_equal(np.sort(union), np.arange(1797))
    # Fixed once and for all, whatever the seed of the pairs.
    np.testing.assert_array_equal(digit_pairs.source_indices("test"), indices["test"])


def test_pairs_use_only_their_split_digits():
    from sklearn.datasets import load_digits

    targets = load_digits().target
    for split in digit_pairs.SPLITS:
        _, labels, sources = digit_pairs.generate(
            split, num_examples=300, return_sources=True
        )
        pool = set(digit_pairs.source_indices(split))
        assert set(sources["left"]) <= pool and set(sources["right"]) <= pool
        np.testing.assert_array_equal(labels["left"], targets[sources["left"]])
        np.testing.assert_array_equal(labels["right"], targets[sources["right"]])


def test_dtypes_shapes_and_ranges():
    images, labels = digit_pairs.generate("train", num_examples=50)
    assert images.shape == (50, 32, 32, 1) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    assert list(labels) == ["left", "right"]
    for name in ("left", "right"):
        assert labels[name].dtype == np.int32 and labels[name].shape == (50,)
        assert labels[name].min() >= 0 and labels[name].max() <= 9
    # MultiMNIST pairs two different classes.
    assert (labels["left"] != labels["right"]).all()
    assert digit_pairs.NUM_CLASSES == 10


def test_images_are_non_trivial():
    images, labels = digit_pairs.generate("validation")
    assert len(images) == 270  # default: one pair per source digit
    ink = (images > 64).reshape(len(images), -1).mean(axis=1)
    assert (ink > 0.05).all() and (ink < 0.8).all()
    assert images.max() == 255.0
    # The left digit lies towards the top-left, the right one bottom-right:
    # both corners carry ink on average, and the images differ.
    s = images.shape[1]
    assert images[:, : s // 3, : s // 3].mean() > 5
    assert images[:, -s // 3 :, -s // 3 :].mean() > 5
    assert len({img.tobytes() for img in images}) == len(images)
    assert len(np.unique(labels["left"])) == 10


def _separation(patches, classes):
    """Between-class over within-class spread of `patches` grouped by class."""
    flat = patches.reshape(len(patches), -1)
    means = np.stack([flat[classes == c].mean(axis=0) for c in range(10)])
    spread = [np.linalg.norm(flat[classes == c] - means[c], axis=1) for c in range(10)]
    within = np.mean([s.mean() for s in spread])
    between = np.linalg.norm(means[:, None] - means[None], axis=-1)
    return between[np.triu_indices(10, 1)].mean() / within


def test_left_digit_top_left_right_digit_bottom_right():
    images, labels = digit_pairs.generate("train", num_examples=1000, seed=2)
    top_left = images[:, :12, :12, 0]
    bottom_right = images[:, -12:, -12:, 0]
    # Each corner is explained by its own digit's class far more than by the
    # other digit's.
    assert _separation(top_left, labels["left"]) > 2 * _separation(
        top_left, labels["right"]
    )
    assert _separation(bottom_right, labels["right"]) > 2 * _separation(
        bottom_right, labels["left"]
    )


def test_channels_and_image_size():
    gray, _ = digit_pairs.generate("test", num_examples=4, image_size=48)
    rgb, _ = digit_pairs.generate("test", num_examples=4, image_size=48, channels=3)
    assert gray.shape == (4, 48, 48, 1) and rgb.shape == (4, 48, 48, 3)
    np.testing.assert_array_equal(rgb, np.repeat(gray, 3, axis=-1))


def test_deterministic_per_seed_and_splits_differ():
    a, la = digit_pairs.generate("train", num_examples=40, seed=5)
    b, lb = digit_pairs.generate("train", num_examples=40, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la["left"], lb["left"])
    c, _ = digit_pairs.generate("train", num_examples=40, seed=6)
    assert not np.array_equal(a, c)
    d, _ = digit_pairs.generate("validation", num_examples=40, seed=5)
    assert not np.array_equal(a, d)


def test_load_matches_generate():
    ds = digit_pairs.load("test", num_examples=6, channels=3)
    image, labels = next(iter(ds))
    assert image.dtype.name == "float32" and tuple(image.shape) == (32, 32, 3)
    assert labels["left"].dtype.name == "int32" and labels["left"].shape == ()
    assert len(list(ds)) == 6
    images, np_labels = digit_pairs.generate("test", num_examples=6, channels=3)
    np.testing.assert_array_equal(image.numpy(), images[0])
    assert int(labels["right"]) == np_labels["right"][0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "dev"}, r"argument `split`.*Received: split='dev'"),
        ({"num_examples": 0}, r"argument `num_examples`.*num_examples=0"),
        ({"image_size": 12}, r"argument `image_size`.*>= 16.*image_size=12"),
        (
            {"channels": 2},
            r"argument `channels`. Expected 1 or 3. Received: channels=2",
        ),
        ({"seed": 1.5}, r"argument `seed`.*seed=1.5"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digit_pairs.generate(**kwargs)
    with pytest.raises(ValueError, match=match):
        digit_pairs.load(**kwargs)


def test_source_indices_bad_split():
    with pytest.raises(ValueError, match=r"argument `split`.*split='all'"):
        digit_pairs.source_indices("all")


def test_missing_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # as if not installed
    # Bypass the cache, which may already hold the digits.
    uncached = digit_pairs._load_source.__wrapped__
    monkeypatch.setattr(digit_pairs, "_load_source", uncached)
    with pytest.raises(ImportError, match=r"digit_pairs needs the 'sklearn' package.*"
                       r'pip install "keras_mtl\[examples\]"'):
        digit_pairs.generate("test", num_examples=1)
