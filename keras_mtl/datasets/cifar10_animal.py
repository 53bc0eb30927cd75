"""CIFAR-10 with a second task: is the object an animal?

The example of seed 003 (an MTL guide): one input, two tasks built from the
same labels, the 10-class CIFAR-10 label (Krizhevsky 2009) and an
animal / non-animal label derived from it. Airplane, automobile, ship and truck
(classes 0, 1, 8, 9: `NON_ANIMAL_CLASSES`) are not animals; bird, cat, deer,
dog, frog and horse are.

The images come from `tfds.load("cifar10")`: tensorflow-datasets downloads
and prepares them on first use (into `data_dir`); tests run offline on
`tfds.testing.mock_data`.
"""

from keras_mtl._optional import require
from keras_mtl._validation import check_bool

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
NUM_CLASSES = len(CLASS_NAMES)
NON_ANIMAL_CLASSES = (0, 1, 8, 9)
#: `ANIMAL[c]` is 1 if CIFAR-10 class `c` is an animal, else 0.
ANIMAL = tuple(int(c not in NON_ANIMAL_CLASSES) for c in range(NUM_CLASSES))
TASKS = ("label", "animal")


def animal_label(label):
    """The animal label (1 animal, 0 not) of CIFAR-10 class ids.

    Args:
        label: Integer class ids in 0..9 (a tensor or array of any shape).

    Returns:
        An int32 tensor of the same shape.

    Example:

    >>> [int(a) for a in animal_label([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])]
    [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    """
    # Imported here: `keras_mtl.datasets` stays light.
    tf = require("tensorflow", "cifar10_animal (a tf.data dataset)")

    return tf.gather(tf.constant(ANIMAL, tf.int32), tf.cast(label, tf.int32))


def load(split="train", *, data_dir=None, download=True, shuffle_files=False, with_info=False):
    """Loads CIFAR-10 with its animal label as an unbatched `tf.data.Dataset`.

    Args:
        split: A tensorflow-datasets split of `cifar10`: `"train"`,
            `"test"`, or a slice such as `"train[:90%]"`.
        data_dir: Where tensorflow-datasets keeps its data (its default
            when `None`).
        download: Whether tensorflow-datasets may download and prepare the
            data when it is not in `data_dir` yet.
        shuffle_files: Passed to `tfds.load` (the files' order, not the
            examples': shuffle the dataset yourself for training).
        with_info: If `True`, return `(dataset, info)` with the
            `tfds.core.DatasetInfo`, as `tfds.load` does.

    Returns:
        A `tf.data.Dataset` of `(image, {"label": label, "animal": animal})`:
        a float32 (32, 32, 3) image with raw values in [0, 255], the int32
        CIFAR-10 class id (see `CLASS_NAMES`) and the int32 animal label.
        Batch it yourself.

    Example:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=4):  # offline, random data
    ...     ds = load("test")
    ...     image, labels = next(iter(ds.batch(4)))
    >>> tuple(image.shape), sorted(labels)
    ((4, 32, 32, 3), ['animal', 'label'])
    """
    if not isinstance(split, str):
        raise ValueError(
            "Invalid value received for argument `split`. Expected a "
            "tensorflow-datasets split name such as 'train', 'test' or "
            f"'train[:90%]'. Received: split={split!r}"
        )
    check_bool("download", download)
    check_bool("shuffle_files", shuffle_files)
    check_bool("with_info", with_info)
    tf = require("tensorflow", "cifar10_animal (a tf.data dataset)")
    tfds = require("tensorflow_datasets", "cifar10_animal.load")

    ds, info = tfds.load(
        "cifar10",
        split=split,
        data_dir=data_dir,
        download=download,
        shuffle_files=shuffle_files,
        with_info=True,
    )

    def add_animal(example):
        label = tf.cast(example["label"], tf.int32)
        image = tf.cast(example["image"], tf.float32)
        return image, {"label": label, "animal": animal_label(label)}

    ds = ds.map(add_animal, num_parallel_calls=tf.data.AUTOTUNE)
    return (ds, info) if with_info else ds
