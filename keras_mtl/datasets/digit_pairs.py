"""Digit pairs: two overlapping handwritten digits, a left and a right label.

A small, offline MultiMNIST (Sabour et al., 2017, "Dynamic Routing Between
Capsules"), the two-task benchmark of Sener & Koltun (2018, "Multi-Task
Learning as Multi-Objective Optimization"). The digits are the 1,797 real
8x8 handwritten digits that ship with scikit-learn
(`sklearn.datasets.load_digits`, values 0 to 16), so nothing is downloaded.

Each example upsamples two digits of different classes (bilinear) to about
0.6 of the image side, puts the left digit near the top-left corner and the
right one near the bottom-right corner, each with a small random shift, so
that they overlap in the middle, and combines them with a pixelwise maximum.
Images are float32 (S, S, channels) in [0, 255]; labels are int32 scalars
`left` and `right` in 0..9.

The 1,797 source digits are split once, by a fixed permutation that does not
depend on `seed`, into train (70%), validation (15%) and test (15%); pairs are
drawn only within a split, so no source digit appears in two splits
(`source_indices(split)` gives the indices). Which pairs are drawn, and their
shifts, depend on `(seed, split)` only.

scikit-learn is an optional dependency: `pip install keras_mtl[examples]`.
"""

import functools

import numpy as np

from keras_mtl._optional import require
from keras_mtl._validation import check_int

NUM_CLASSES = 10
TASKS = ("left", "right")
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
NUM_SOURCE_DIGITS = 1797
DIGIT_FRACTION = 0.6
# Fixed, and independent of `seed`: the source split must never change.
_SPLIT_SEED = 20180101


def _validate_split(split):
    if split not in SPLITS:
        raise ValueError(
            "Invalid value received for argument `split`. "
            f"Expected one of {SPLITS}. Received: split={split!r}"
        )


def _validate(split, num_examples, image_size, channels, seed):
    _validate_split(split)
    check_int("num_examples", num_examples, minimum=1, optional=True)
    check_int("image_size", image_size, minimum=16)
    try:
        count = check_int("channels", channels, minimum=1)
    except ValueError:
        count = None
    if count not in (1, 3):
        raise ValueError(
            "Invalid value received for argument `channels`. "
            f"Expected 1 or 3. Received: channels={channels!r}"
        )
    check_int("seed", seed, minimum=0)


@functools.lru_cache(maxsize=1)
def _load_source():
    # scikit-learn bundles the handwritten digits.
    load_digits = require("sklearn.datasets", "keras_mtl.datasets.digit_pairs").load_digits
    digits = load_digits()
    images = digits.images.astype(np.float32)
    targets = digits.target.astype(np.int32)
    if len(images) != NUM_SOURCE_DIGITS:
        raise RuntimeError(
            f"Expected {NUM_SOURCE_DIGITS} digits from "
            f"`sklearn.datasets.load_digits`, got {len(images)}."
        )
    return images, targets


def source_indices(split):
    """Indices, into `sklearn.datasets.load_digits()`, of a split's digits.

    The three splits partition the 1,797 digits and never change (they do not
    depend on any seed).

    Args:
        split: One of `"train"`, `"validation"`, `"test"`.

    Returns:
        A sorted int64 numpy array of source indices.

    Example:

    >>> [len(source_indices(s)) for s in ("train", "validation", "test")]
    [1258, 270, 269]
    """
    _validate_split(split)
    permutation = np.random.RandomState(_SPLIT_SEED).permutation(NUM_SOURCE_DIGITS)
    n_train = round(SPLIT_FRACTIONS[0] * NUM_SOURCE_DIGITS)
    n_validation = round(SPLIT_FRACTIONS[1] * NUM_SOURCE_DIGITS)
    bounds = {
        "train": (0, n_train),
        "validation": (n_train, n_train + n_validation),
        "test": (n_train + n_validation, NUM_SOURCE_DIGITS),
    }
    start, stop = bounds[split]
    return np.sort(permutation[start:stop]).astype(np.int64)


def _bilinear_matrix(out_size, in_size):
    """(out, in) matrix that resizes a signal with half-pixel centres."""
    x = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    x = np.clip(x, 0, in_size - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = x - lo
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    np.add.at(matrix, (np.arange(out_size), lo), 1 - frac)
    np.add.at(matrix, (np.arange(out_size), hi), frac)
    return matrix


def generate(
    split="train",
    num_examples=None,
    image_size=32,
    channels=1,
    seed=0,
    *,
    return_sources=False,
):
    """Generates digit pairs as numpy arrays.

    Args:
        split: One of `"train"`, `"validation"`, `"test"`.
        num_examples: Number of pairs, an integer >= 1, or `None` for as
            many pairs as the split has source digits (1258, 270 or 269).
        image_size: Side S of the square images in pixels, an integer >= 16.
        channels: 1 (gray) or 3 (the gray repeated, for RGB backbones).
        seed: Non-negative integer; with `split` it fixes which digits are
            paired and how they are shifted.
        return_sources: If `True`, also return the indices, into
            `sklearn.datasets.load_digits()`, of the digits of each pair.

    Returns:
        `(images, labels)`: float32 images of shape (N, S, S, channels) in
        [0, 255] and `{"left": int32 (N,), "right": int32 (N,)}`. With
        `return_sources=True`, `(images, labels, sources)` where `sources` is
        `{"left": int64 (N,), "right": int64 (N,)}`.

    Example:

    >>> images, labels = generate("test", num_examples=5)
    >>> images.shape, labels["left"].dtype.name
    ((5, 32, 32, 1), 'int32')
    >>> bool((labels["left"] != labels["right"]).all())
    True
    """
    _validate(split, num_examples, image_size, channels, seed)
    source_images, source_targets = _load_source()
    pool = source_indices(split)
    n = len(pool) if num_examples is None else int(num_examples)
    s = int(image_size)
    rng = np.random.default_rng(
        np.random.SeedSequence([int(seed), SPLITS.index(split)])
    )

    # --- Pairs: two digits of different classes, as in MultiMNIST ---
    left = rng.choice(pool, size=n)
    right = rng.choice(pool, size=n)
    for _ in range(1000):
        same = source_targets[left] == source_targets[right]
        if not same.any():
            break
        right[same] = rng.choice(pool, size=int(same.sum()))

    # --- Placement ---
    d = max(8, round(DIGIT_FRACTION * s))
    jitter = max(1, round(0.1 * s))
    left_offsets = rng.integers(0, jitter + 1, size=(n, 2))
    right_offsets = (s - d) - rng.integers(0, jitter + 1, size=(n, 2))

    resize = _bilinear_matrix(d, 8)
    # (d, 8) @ (n, 8, 8) @ (8, d): every digit resized in one product.
    digits = np.einsum("ij,njk,lk->nil", resize, source_images, resize)
    digits *= 255.0 / 16.0
    images = np.zeros((n, s, s), dtype=np.float32)
    for i in range(n):
        (ly, lx), (ry, rx) = left_offsets[i], right_offsets[i]
        images[i, ly : ly + d, lx : lx + d] = digits[left[i]]
        np.maximum(
            images[i, ry : ry + d, rx : rx + d],
            digits[right[i]],
            out=images[i, ry : ry + d, rx : rx + d],
        )
    images = np.clip(images, 0.0, 255.0)
    images = np.repeat(images[..., None], int(channels), axis=-1)
    labels = {
        "left": source_targets[left].astype(np.int32),
        "right": source_targets[right].astype(np.int32),
    }
    if return_sources:
        return images, labels, {"left": left, "right": right}
    return images, labels


def load(split="train", num_examples=None, image_size=32, channels=1, seed=0):
    """Loads digit pairs as an unbatched `tf.data.Dataset`.

    Args:
        split: One of `"train"`, `"validation"`, `"test"`.
        num_examples: Number of pairs, an integer >= 1, or `None` for as
            many pairs as the split has source digits.
        image_size: Side S of the square images in pixels, an integer >= 16.
        channels: 1 (gray) or 3 (the gray repeated).
        seed: Non-negative integer; with `split` it fixes the data.

    Returns:
        A `tf.data.Dataset` of `(image, {"left": label, "right": label})`:
        a float32 (S, S, channels) image in [0, 255] and int32 scalar labels
        in 0..9. Batch it yourself.

    Example:

    >>> ds = load("validation", num_examples=4, channels=3)
    >>> image, labels = next(iter(ds.batch(4)))
    >>> tuple(image.shape), sorted(labels)
    ((4, 32, 32, 3), ['left', 'right'])
    """
    images, labels = generate(
        split=split,
        num_examples=num_examples,
        image_size=image_size,
        channels=channels,
        seed=seed,
    )
    # Imported here: `keras_mtl.datasets` stays light.
    tf = require("tensorflow", "digit_pairs.load (a tf.data dataset)")

    return tf.data.Dataset.from_tensor_slices((images, labels))
