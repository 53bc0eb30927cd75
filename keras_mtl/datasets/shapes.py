"""Procedural shapes scenes: one image, six labels, no download.

Each scene holds one to three shapes (circle, square, triangle) of random
colour, size, position and depth over a background that is a plain colour with
a faint gradient, sometimes with light noise. Scenes are painted with numpy
(coordinate-grid masks, painter's algorithm: farther shapes first, so nearer
shapes occlude them), which makes one image carry labels for the kinds of task
a multi-task model mixes:

| label          | dtype, shape     | meaning                                          |
|----------------|------------------|--------------------------------------------------|
| `shape`        | int32 ()         | class of the largest shape (see `CLASS_NAMES`)   |
| `count`        | float32 ()       | number of shapes, 1 to 3 (regression)            |
| `size`         | float32 ()       | side of the largest shape, as a fraction of S    |
| `position`     | float32 (2,)     | (x, y) centre of the largest shape, in [0, 1]    |
| `segmentation` | int32 (S, S)     | 0 background, 1 + class id of the visible shape  |
| `depth`        | float32 (S, S, 1)| 1.0 background, the nearest shape's depth else   |

Images are float32 (S, S, 3) raw pixels in [0, 255] (whole numbers, so they
round-trip through uint8); models do their own preprocessing.

"Largest" means largest drawn size (bounding-box side), whether or not a
nearer shape hides part of it; `count` counts every shape drawn, hidden or not.

The data are a pure function of `(seed, split, image_size)`: the same arguments
give the same arrays, the three splits give different scenes, and a smaller
`num_examples` gives a prefix of a larger one (scenes are drawn in fixed blocks
of 64, each block from its own `numpy.random.SeedSequence`).

For `tensorflow_datasets`, `import keras_mtl.datasets.shapes_tfds` registers
the same data as the builder `"keras_mtl_shapes"`.
"""

import numpy as np

from keras_mtl._optional import require
from keras_mtl._validation import check_int

CLASS_NAMES = ("circle", "square", "triangle")
NUM_CLASSES = len(CLASS_NAMES)
NUM_SEGMENTATION_CLASSES = NUM_CLASSES + 1
TASKS = ("shape", "count", "size", "position", "segmentation", "depth")
SPLITS = ("train", "validation", "test")

MAX_SHAPES = 3
MIN_SIZE, MAX_SIZE = 0.15, 0.45
MIN_DEPTH, MAX_DEPTH = 0.2, 0.8
BACKGROUND_DEPTH = 1.0
# Shapes must stand out from the background: minimum RGB distance (max ~441).
_MIN_CONTRAST = 100.0
# Scenes are drawn in blocks with their own seed, so that num_examples only
# truncates, and memory stays bounded (a block of 64 at 256 px is ~50 MB).
_BLOCK = 64


def _validate(split, num_examples, image_size, tasks, seed):
    if split not in SPLITS:
        raise ValueError(
            "Invalid value received for argument `split`. "
            f"Expected one of {SPLITS}. Received: split={split!r}"
        )
    check_int("num_examples", num_examples, minimum=1)
    check_int("image_size", image_size, minimum=16)
    check_int("seed", seed, minimum=0)
    if tasks is None:
        return TASKS
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)):
        raise ValueError(
            "Invalid value received for argument `tasks`. "
            f"Expected None or a list or tuple of names from {TASKS}. "
            f"Received: tasks={tasks!r}"
        )
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(
            "Invalid value received for argument `tasks`. "
            f"Expected distinct names from {TASKS}. Received: tasks={tasks!r}"
        )
    return tuple(tasks)


def _draw_block(rng, n, image_size):
    """Draws the parameters of `n` scenes and paints them."""
    s = image_size
    # --- Scene parameters ---
    count = rng.integers(1, MAX_SHAPES + 1, size=n)
    active = np.arange(MAX_SHAPES)[None, :] < count[:, None]  # (n, 3)
    classes = rng.integers(0, NUM_CLASSES, size=(n, MAX_SHAPES))
    sizes = rng.uniform(MIN_SIZE, MAX_SIZE, size=(n, MAX_SHAPES))
    # The centre keeps the whole shape inside the image.
    centres = rng.uniform(0.0, 1.0, size=(n, MAX_SHAPES, 2))
    centres = sizes[..., None] / 2 + centres * (1.0 - sizes[..., None])
    depths = rng.uniform(MIN_DEPTH, MAX_DEPTH, size=(n, MAX_SHAPES))
    background = rng.uniform(0.0, 255.0, size=(n, 3))
    colours = rng.uniform(0.0, 255.0, size=(n, MAX_SHAPES, 3))
    # Redraw the colours too close to the background (a few rounds suffice).
    for _ in range(100):
        close = (
            np.linalg.norm(colours - background[:, None, :], axis=-1) < _MIN_CONTRAST
        )
        if not close.any():
            break
        colours[close] = rng.uniform(0.0, 255.0, size=(int(close.sum()), 3))
    gradient_angle = rng.uniform(0.0, 2 * np.pi, size=n)
    gradient_amplitude = rng.uniform(0.0, 40.0, size=n)
    noisy = rng.random(n) < 0.5
    noise_std = np.where(noisy, rng.uniform(3.0, 10.0, size=n), 0.0)
    noise = rng.standard_normal((int(noisy.sum()), s, s, 3), dtype=np.float32)

    # --- Background ---
    # Pixel centres in [0, 1]: v indexes rows (y), u columns (x).
    grid = (np.arange(s, dtype=np.float32) + 0.5) / s
    v = grid[None, :, None]
    u = grid[None, None, :]
    gx = (gradient_amplitude * np.cos(gradient_angle)).astype(np.float32)
    gy = (gradient_amplitude * np.sin(gradient_angle)).astype(np.float32)
    ramp = (u - 0.5) * gx[:, None, None] + (v - 0.5) * gy[:, None, None]
    image = background.astype(np.float32)[:, None, None, :] + ramp[..., None]
    image[noisy] += noise_std[noisy, None, None, None].astype(np.float32) * noise

    # --- Shapes, farthest first ---
    # Painter's algorithm on an index map: each pixel keeps the slot of the
    # last (nearest) shape painted over it, 0 for background, and colours,
    # classes and depths are looked up once at the end.
    half_sizes = (sizes / 2).astype(np.float32)
    centres32 = centres.astype(np.float32)
    # Absent slots sort last and paint nothing.
    order = np.argsort(np.where(active, -depths, np.inf), axis=1, kind="stable")
    rows = np.arange(n)
    visible = np.zeros((n, s, s), dtype=np.intp)
    for k in range(MAX_SHAPES):
        j = order[:, k]
        cls = classes[rows, j][:, None, None]
        half = half_sizes[rows, j][:, None, None]
        dx = np.abs(u - centres32[rows, j, 0][:, None, None])
        dy = v - centres32[rows, j, 1][:, None, None]
        circle = dx**2 + dy**2 <= half**2
        square = (dx <= half) & (np.abs(dy) <= half)
        # Apex at the top centre, base along the bottom of the bounding box.
        triangle = (np.abs(dy) <= half) & (2 * dx <= dy + half)
        mask = np.where(cls == 0, circle, np.where(cls == 1, square, triangle))
        mask &= active[rows, j][:, None, None]
        visible = np.where(mask, (1 + j)[:, None, None], visible)

    pixel_rows = rows[:, None, None]
    slot_colours = np.concatenate(
        [np.zeros((n, 1, 3)), colours], axis=1
    ).astype(np.float32)
    image = np.where(
        (visible > 0)[..., None], slot_colours[pixel_rows, visible], image
    )
    image = np.round(np.clip(image, 0.0, 255.0)).astype(np.float32)
    slot_segmentation = np.concatenate(
        [np.zeros((n, 1)), 1 + classes], axis=1
    ).astype(np.int32)
    segmentation = slot_segmentation[pixel_rows, visible]
    slot_depths = np.concatenate(
        [np.full((n, 1), BACKGROUND_DEPTH), depths], axis=1
    ).astype(np.float32)
    depth = slot_depths[pixel_rows, visible]

    largest = np.argmax(np.where(active, sizes, -1.0), axis=1)
    labels = {
        "shape": classes[rows, largest].astype(np.int32),
        "count": count.astype(np.float32),
        "size": sizes[rows, largest].astype(np.float32),
        "position": centres[rows, largest].astype(np.float32),
        "segmentation": segmentation.astype(np.int32),
        "depth": depth[..., None],
    }
    scenes = {
        "classes": np.where(active, classes, -1).astype(np.int32),
        "sizes": np.where(active, sizes, 0.0).astype(np.float32),
        "centres": np.where(active[..., None], centres, 0.0).astype(np.float32),
        "depths": np.where(active, depths, 0.0).astype(np.float32),
        "colours": np.where(active[..., None], colours, 0.0).astype(np.float32),
        "largest": largest.astype(np.int32),
    }
    return image, labels, scenes


def generate(
    split="train",
    num_examples=1000,
    image_size=64,
    tasks=None,
    seed=0,
    *,
    return_scenes=False,
):
    """Generates shapes scenes as numpy arrays.

    Args:
        split: One of `"train"`, `"validation"`, `"test"`. Each split is drawn
            from its own random stream.
        num_examples: Number of scenes, an integer >= 1.
        image_size: Side S of the square images in pixels, an integer >= 16.
        tasks: `None` for every label, or a list or tuple of names from
            `TASKS`; the label dict follows this order.
        seed: Non-negative integer; with `split` and `image_size` it fixes
            the data.
        return_scenes: If `True`, also return the per-shape parameters
            (`classes` with -1 for absent shapes, `sizes`, `centres`, `depths`,
            `colours`, each with a slot axis of length 3, and `largest`, the
            slot the scalar labels describe).

    Returns:
        `(images, labels)`: float32 images of shape (N, S, S, 3) in [0, 255],
        and a dict of label arrays, each with a leading axis N (dtypes and
        shapes in the module docstring). With `return_scenes=True`,
        `(images, labels, scenes)`.

    Example:

    >>> images, labels = generate(num_examples=4, image_size=32)
    >>> images.shape, images.dtype.name
    ((4, 32, 32, 3), 'float32')
    >>> labels["segmentation"].shape, labels["depth"].shape
    ((4, 32, 32), (4, 32, 32, 1))
    """
    tasks = _validate(split, num_examples, image_size, tasks, seed)
    n, size = int(num_examples), int(image_size)
    images = np.empty((n, size, size, 3), dtype=np.float32)
    labels, scenes = None, None
    for b, start in enumerate(range(0, n, _BLOCK)):
        rng = np.random.default_rng(
            np.random.SeedSequence([int(seed), SPLITS.index(split), b])
        )
        block_images, block_labels, block_scenes = _draw_block(rng, _BLOCK, size)
        stop = min(start + _BLOCK, n)
        if labels is None:
            # Filled block by block: one allocation per array, no concatenation.
            labels = {
                t: np.empty((n,) + block_labels[t].shape[1:], block_labels[t].dtype)
                for t in tasks
            }
            scenes = {
                k: np.empty((n,) + v.shape[1:], v.dtype)
                for k, v in block_scenes.items()
            }
        images[start:stop] = block_images[: stop - start]
        for t in tasks:
            labels[t][start:stop] = block_labels[t][: stop - start]
        for k, v in block_scenes.items():
            scenes[k][start:stop] = v[: stop - start]
    if return_scenes:
        return images, labels, scenes
    return images, labels


def load(split="train", num_examples=1000, image_size=64, tasks=None, seed=0):
    """Loads shapes scenes as an unbatched `tf.data.Dataset`.

    The arrays come from `generate` (all in memory; a few thousand scenes at
    64 px take a fraction of a second and a few hundred MB at most).

    Args:
        split: One of `"train"`, `"validation"`, `"test"`.
        num_examples: Number of scenes, an integer >= 1.
        image_size: Side S of the square images in pixels, an integer >= 16.
        tasks: `None` for every label, or a list or tuple of names from
            `TASKS`.
        seed: Non-negative integer; with `split` and `image_size` it fixes
            the data.

    Returns:
        A `tf.data.Dataset` of `(image, {task: label})` pairs: a float32
        (S, S, 3) image in [0, 255] and the labels described in the module
        docstring. Batch it yourself.

    Example:

    >>> ds = load("validation", num_examples=8, image_size=32,
    ...           tasks=["shape", "segmentation"])
    >>> image, labels = next(iter(ds.batch(8)))
    >>> tuple(image.shape), tuple(labels["segmentation"].shape)
    ((8, 32, 32, 3), (8, 32, 32))
    """
    images, labels = generate(
        split=split,
        num_examples=num_examples,
        image_size=image_size,
        tasks=tasks,
        seed=seed,
    )
    # Imported here: `keras_mtl.datasets` stays light.
    tf = require("tensorflow", "shapes.load (a tf.data dataset)")

    return tf.data.Dataset.from_tensor_slices((images, labels))
