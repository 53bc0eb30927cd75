"""UTKFace: face images labelled for age, gender and ethnicity by file name.

UTKFace (Zhang, Song & Qi, "Age Progression/Regression by Conditional
Adversarial Autoencoder", CVPR 2017; https://susanqq.github.io/UTKFace/) holds
about 23,700 faces. Its labels are in the file names, not in a separate file:

    [age]_[gender]_[race]_[date&time].jpg             (in-the-wild images)
    [age]_[gender]_[race]_[date&time].jpg.chip.jpg    (aligned and cropped)

- age: whole years, 0 to 116 (`AGE_RANGE`);
- gender: 0 male, 1 female (`GENDER_NAMES`);
- race (the `ethnicity` task here, as in the HydraNet story of seed 001): 0
  White, 1 Black, 2 Asian, 3 Indian, 4 Others (`ETHNICITY_NAMES`).

Nothing is downloaded here (the data is for non-commercial research only):
download and extract the archive yourself and pass the folder to `load`.

A few names of the public archive lack a field (for instance
`39_1_20170116174525125.jpg.chip.jpg`, with no race). Such files are not
guessed at: `load` skips every file whose name does not parse or whose labels
are out of range, warns with the count and the first few names and reasons,
and `with_info=True` returns them all (`Scan.skipped`). Only the folder's own
files are read, not its subfolders.
"""

import dataclasses
import numbers
import os
import warnings

import numpy as np

from keras_mtl._optional import require
from keras_mtl._validation import check_int
from keras_mtl._validation import check_ints

TASKS = ("age", "gender", "ethnicity")
AGE_RANGE = (0, 116)
GENDER_NAMES = ("male", "female")
ETHNICITY_NAMES = ("White", "Black", "Asian", "Indian", "Others")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SUBSETS = ("training", "validation", "both")
# Fields of a name, in order; the last one (date and time) is not a label.
_FIELDS = ("age", "gender", "race", "date")
# How many skipped names the warning shows (all of them are in `Scan.skipped`).
_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Scan:
    """What `scan` found in a UTKFace folder.

    Attributes:
        directory: The folder.
        paths: Paths of the usable images, sorted by file name.
        labels: `{"age": int32, "gender": int32, "ethnicity": int32}` numpy
            arrays, one value per path.
        skipped: `(file name, reason)` of every file that was not used.

    Example:

    >>> found = Scan("faces", ("faces/30_0_3_20170117145159065.jpg",),
    ...              {"age": [30], "gender": [0], "ethnicity": [3]},
    ...              (("notes.txt", "not an image file"),))
    >>> found.num_examples, found.num_skipped
    (1, 1)
    """

    directory: str
    paths: tuple
    labels: dict
    skipped: tuple

    @property
    def num_examples(self):
        return len(self.paths)

    @property
    def num_skipped(self):
        return len(self.skipped)


def parse_filename(name):
    """Labels of one UTKFace file name.

    Args:
        name: A file name such as `"30_0_3_20170117145159065.jpg.chip.jpg"`
            (a path is accepted; only its last part is read).

    Returns:
        `{"age": int, "gender": int, "ethnicity": int}`.

    Raises:
        ValueError: if the name is not an image name of the UTKFace form or
            a label is out of range; the message says which.

    Example:

    >>> parse_filename("30_0_3_20170117145159065.jpg.chip.jpg")
    {'age': 30, 'gender': 0, 'ethnicity': 3}
    >>> parse_filename("39_1_20170116174525125.jpg.chip.jpg")
    Traceback (most recent call last):
    ...
    ValueError: Invalid UTKFace file name '39_1_...': expected 4 fields ..., found 3.
    """
    base = os.path.basename(name)

    def invalid(reason):
        return ValueError(f"Invalid UTKFace file name {base!r}: {reason}.")

    if not base.lower().endswith(IMAGE_EXTENSIONS):
        raise invalid(f"not an image file (expected an extension among {IMAGE_EXTENSIONS})")
    # Everything after the first dot is extension (`.jpg.chip.jpg`).
    fields = base.split(".", 1)[0].split("_")
    if len(fields) != len(_FIELDS):
        raise invalid(
            f"expected {len(_FIELDS)} fields {'_'.join(_FIELDS)} before the "
            f"extension, found {len(fields)}"
        )
    for field, text in zip(_FIELDS, fields):
        if not (text.isascii() and text.isdigit()):
            raise invalid(f"{field} {text!r} is not a whole number")
    age, gender, race = (int(text) for text in fields[:3])
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        raise invalid(f"age {age} is outside [{AGE_RANGE[0]}, {AGE_RANGE[1]}]")
    if gender not in (0, 1):
        raise invalid(f"gender {gender} is not 0 ({GENDER_NAMES[0]}) or 1 ({GENDER_NAMES[1]})")
    if not 0 <= race < len(ETHNICITY_NAMES):
        raise invalid(f"race {race} is outside [0, {len(ETHNICITY_NAMES) - 1}]")
    return {"age": age, "gender": gender, "ethnicity": race}


def scan(directory):
    """Lists a UTKFace folder: the usable images, their labels, the rest.

    Args:
        directory: The folder holding the images (not read recursively).

    Returns:
        A `Scan`. Files whose names do not parse (see `parse_filename`) are
        in `Scan.skipped` with the reason.

    Raises:
        ValueError: if `directory` is not an existing folder, or holds no
            usable image (the message lists the first skipped names).
    """
    if isinstance(directory, os.PathLike):
        directory = os.fspath(directory)
    if not isinstance(directory, str) or not os.path.isdir(directory):
        raise ValueError(
            "Invalid value received for argument `directory`. Expected an "
            "existing folder of UTKFace images (download and extract the "
            f"dataset first). Received: directory={directory!r}"
        )
    entries = sorted(os.listdir(directory))
    files = [e for e in entries if os.path.isfile(os.path.join(directory, e))]
    paths, skipped = [], []
    labels = {task: [] for task in TASKS}
    for name in files:
        try:
            found = parse_filename(name)
        except ValueError as error:
            skipped.append((name, str(error)))
            continue
        paths.append(os.path.join(directory, name))
        for task in TASKS:
            labels[task].append(found[task])
    if not paths:
        folders = [e for e in entries if e not in files]
        raise ValueError(
            "Invalid value received for argument `directory`. Expected a folder "
            "with UTKFace images named age_gender_race_date.jpg. Received: "
            f"directory={directory!r}, which holds {len(files)} file(s), none "
            f"usable{_skipped_text(skipped)}"
            + (f"; its subfolders {folders[:_SHOWN]} are not read (pass one of them)"
               if folders else "")
        )
    return Scan(
        directory=directory,
        paths=tuple(paths),
        labels={task: np.asarray(values, np.int32) for task, values in labels.items()},
        skipped=tuple(skipped),
    )


def _skipped_text(skipped):
    if not skipped:
        return ""
    shown = "; ".join(reason for _, reason in skipped[:_SHOWN])
    more = f"; and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
    return f": {shown}{more}"


def _check_image_size(image_size):
    pair = isinstance(image_size, (tuple, list, np.ndarray))
    try:
        return check_ints(
            "image_size", image_size if pair else (image_size, image_size),
            min_length=2, max_length=2,
        )
    except ValueError:
        raise ValueError(
            "Invalid value received for argument `image_size`. Expected an "
            "integer >= 1 or a pair (height, width) of them. Received: "
            f"image_size={image_size!r}"
        ) from None


def _check_split(validation_split, subset):
    """`validation_split` as a `float` (or None) after checking it and `subset`."""
    if validation_split is None:
        if subset is not None:
            raise ValueError(
                "Invalid value received for argument `subset`. It needs "
                f"`validation_split`. Received: subset={subset!r}, validation_split=None"
            )
        return None
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, numbers.Real)
        or not 0 < validation_split < 1
    ):
        raise ValueError(
            "Invalid value received for argument `validation_split`. Expected "
            "a float strictly between 0 and 1. Received: "
            f"validation_split={validation_split!r}"
        )
    if subset not in SUBSETS:
        raise ValueError(
            "Invalid value received for argument `subset`. Expected one of "
            f"{SUBSETS} with `validation_split`. Received: subset={subset!r}"
        )
    return float(validation_split)


def load(
    directory,
    image_size=128,
    *,
    validation_split=None,
    subset=None,
    seed=0,
    with_info=False,
):
    """Loads a UTKFace folder as an unbatched `tf.data.Dataset`.

    Files are listed by name, then put in an order drawn from `seed` (file
    names sort by age, so an unshuffled split would hold out the oldest
    faces); `validation_split` holds out the last part of that order, as
    `keras.utils.image_dataset_from_directory` does. Reshuffle each epoch
    yourself (`ds.shuffle(...)`) and batch (`ds.batch(...)`).

    Args:
        directory: The folder of images (not read recursively).
        image_size: Side of the square images, or `(height, width)`:
            images are resized to it (bilinear, antialiased).
        validation_split: Optional fraction (0 to 1) of the images held out.
        subset: With `validation_split`: `"training"`, `"validation"` or
            `"both"` (a `(training, validation)` pair of datasets).
        seed: Non-negative integer fixing the order and hence the split.
        with_info: If `True`, return `(dataset, scan)` where `scan` is the
            `Scan` of the folder (its `skipped` lists every unused file).

    Returns:
        A `tf.data.Dataset` of `(image, {"age": age, "gender": gender,
        "ethnicity": ethnicity})`: a float32 `(height, width, 3)` image with
        raw values in [0, 255], a float32 age in years and int32 gender and
        ethnicity ids. With `subset="both"`, a pair of datasets.

    Raises:
        ValueError: for a missing folder, a folder with no usable image, or
            an invalid argument. Skipped files only raise a `UserWarning`.

    Example:

    >>> import os, tempfile, warnings
    >>> import numpy as np, tensorflow as tf
    >>> jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), "uint8")).numpy()
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     for name in ["30_0_3_20170117145159065.jpg.chip.jpg",
    ...                  "61_1_20170109142408075.jpg.chip.jpg"]:  # no race
    ...         with open(os.path.join(folder, name), "wb") as f:
    ...             _ = f.write(jpeg)
    ...     with warnings.catch_warnings():
    ...         warnings.simplefilter("ignore")  # "UTKFace: skipped 1 of 2 files"
    ...         ds, info = load(folder, image_size=16, with_info=True)
    ...     image, labels = next(iter(ds))
    >>> tuple(image.shape), float(labels["age"]), info.num_skipped
    ((16, 16, 3), 30.0, 1)
    """
    size = _check_image_size(image_size)
    validation_split = _check_split(validation_split, subset)
    seed = check_int("seed", seed, minimum=0)
    found = scan(directory)
    if found.skipped:
        warnings.warn(
            f"UTKFace: skipped {found.num_skipped} of "
            f"{found.num_skipped + found.num_examples} files in "
            f"{found.directory!r}{_skipped_text(found.skipped)}. "
            "Pass `with_info=True` to get them all.",
            stacklevel=2,
        )

    order = np.random.default_rng(int(seed)).permutation(found.num_examples)
    paths = np.asarray(found.paths)[order]
    labels = {task: values[order] for task, values in found.labels.items()}
    if validation_split is None:
        result = _dataset(paths, labels, size)
    else:
        num_validation = int(validation_split * found.num_examples)
        cut = found.num_examples - num_validation
        if (subset != "validation" and cut == 0) or (
            subset != "training" and num_validation == 0
        ):
            raise ValueError(
                "Invalid value received for argument `validation_split`. "
                f"Expected a split that leaves images on both sides; "
                f"{found.num_examples} image(s) give {cut} for training and "
                f"{num_validation} for validation. Received: "
                f"validation_split={validation_split!r}"
            )
        parts = {
            "training": _dataset(paths[:cut], {t: v[:cut] for t, v in labels.items()}, size)
            if subset != "validation" else None,
            "validation": _dataset(paths[cut:], {t: v[cut:] for t, v in labels.items()}, size)
            if subset != "training" else None,
        }
        result = (parts["training"], parts["validation"]) if subset == "both" else parts[subset]
    return (result, found) if with_info else result


def _dataset(paths, labels, size):
    # Imported here: `keras_mtl.datasets` stays light.
    tf = require("tensorflow", "utkface.load (a tf.data dataset)")

    def read(path, label):
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=3, expand_animations=False
        )
        # Antialiasing: UTKFace crops are 200 px and models take 64-128 px.
        image = tf.image.resize(image, size, antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
        return image, {
            "age": tf.cast(label["age"], tf.float32),
            "gender": label["gender"],
            "ethnicity": label["ethnicity"],
        }

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
