"""A multi-task model as a SavedModel for TF Serving.

`export_saved_model` writes the layout TF Serving loads, `<base>/<version>/`
(see `keras_mtl.export.versioning`), with post-processing inside the graph,
so a client gets answers rather than logits:

| task                       | outputs                                            |
|----------------------------|----------------------------------------------------|
| `MulticlassClassification` | `<task>` probabilities, `<task>_class_ids`,        |
|                            | `<task>_class_names` (when the task has names)     |
| `Segmentation`             | the same, per pixel                                |
| `BinaryClassification`     | `<task>` P(1), `<task>_class_ids` (P >= threshold) |
| `MultilabelClassification` | `<task>` probabilities, `<task>_labels` (multi-hot)|
|                            | `<task>_label_names` ("" where a label is off)     |
| `Regression`, `DenseRegression`, others | `<task>`: the head's output          |

Regression heads are trained on the labels as given (no hidden scaling), so
their outputs are already in the labels' units.

Signatures (TF Serving's `signature_name`):

- `serving_default`: raw images (pixel values 0-255, the model's input shape)
  in, every task's outputs out; a model with several inputs (a text or graph
  trunk) takes them by their own names;
- `serve_<task>`: the same input, one task's outputs; it runs the trunk and
  that task's head only;
- `serving_bytes` (with `image_bytes=True`): a batch of encoded JPEG / PNG /
  GIF / BMP images (`tf.string`, input `<input_name>_bytes`, which TF Serving's
  REST API reads from `{"b64": ...}`), decoded and resized to the model's input
  size in the graph, every task's outputs out.

The SavedModel holds the variables those functions read and nothing else: no
loss-weighting state, no optimizer, no metrics (Keras' `ExportArchive`
tracks the variables the endpoints use; the model itself is not tracked).
"""

import numbers

import keras

from keras_mtl._optional import require
from keras_mtl import tasks as tasks_lib
from keras_mtl._validation import check_bool
from keras_mtl.export import versioning
from keras_mtl.models import MultiTaskModel

tf = require("tensorflow", "keras_mtl.export (SavedModel, TFLite)")

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
TASK_SIGNATURE_PREFIX = "serve_"


# --- checks ---------------------------------------------------------------------
def check_model(model):
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "Export needs the TensorFlow backend (SavedModel and TFLite graphs "
            f"are TensorFlow graphs). Current backend: {keras.backend.backend()!r}. "
            "Set KERAS_BACKEND=tensorflow."
        )
    if not isinstance(model, MultiTaskModel):
        raise ValueError(
            "Invalid value received for argument `model`. Expected a "
            "`keras_mtl.MultiTaskModel` (from `keras_mtl.build_model`, or a "
            "tuner's best model). Received: model of type "
            f"{type(model).__name__}"
        )
    if not getattr(model, "built", False):
        raise ValueError(
            "Invalid value received for argument `model`. Expected a built "
            "model (its variables are what gets exported). Received a model "
            "that was never built: build it (call it on a batch) first."
        )


def check_input_name(input_name):
    if not isinstance(input_name, str) or not input_name.isidentifier():
        raise ValueError(
            "Invalid value received for argument `input_name`. Expected a "
            "name made of letters, digits and underscores, not starting with "
            f"a digit (e.g. 'image'). Received: input_name={input_name!r}"
        )
    return input_name


def input_spec(model, input_name="image"):
    """The signatures' input: one `tf.TensorSpec` named `input_name` for an
    image (or other single) input, or for a model with several inputs (a text
    or graph trunk), a dict of specs named after the model's inputs."""
    if not getattr(model, "several_inputs", False):
        return tf.TensorSpec((None, *model.image_shape), model.inputs[0].dtype, name=input_name)
    if input_name != "image":
        raise ValueError(
            "Invalid value received for argument `input_name`. It names a single "
            "input; this model's inputs keep their own names "
            f"{[t.name for t in model.inputs]}. Received: input_name={input_name!r}"
        )
    structure = model.input
    if isinstance(structure, dict):
        return {n: tf.TensorSpec(t.shape, t.dtype, name=n) for n, t in structure.items()}
    return [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in structure]


def _check_threshold(threshold):
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not 0 < threshold < 1
    ):
        raise ValueError(
            "Invalid value received for argument `threshold`. Expected a "
            f"float in (0, 1). Received: threshold={threshold!r}"
        )
    return float(threshold)


def _check_task_signatures(model, task_signatures):
    names = model.task_names
    if task_signatures is None:
        return names
    if isinstance(task_signatures, str) or not isinstance(task_signatures, (list, tuple)):
        raise ValueError(
            "Invalid value received for argument `task_signatures`. Expected "
            f"None (one signature per task) or a list of task names from {names}. "
            f"Received: task_signatures={task_signatures!r}"
        )
    unknown = [t for t in task_signatures if t not in names]
    if unknown:
        raise ValueError(
            "Invalid value received for argument `task_signatures`. Expected "
            f"task names from {names}. Received unknown task names {unknown} in "
            f"task_signatures={task_signatures!r}"
        )
    return list(dict.fromkeys(task_signatures))


def _check_names(task):
    """Class / label names must match the head's width (gather would fail at
    serving time otherwise)."""
    names = getattr(task, "class_names", None) or getattr(task, "label_names", None)
    if names is not None and len(names) != task.output_channels:
        raise ValueError(
            f"Invalid task {task.name!r}: it has {len(names)} class names for "
            f"{task.output_channels} outputs. Received: {names!r}"
        )


# --- the serving graph -------------------------------------------------------------
def task_outputs(task, predictions, threshold=0.5):
    """A task's serving outputs from its head's output (inside a graph).

    Args:
        task: A `keras_mtl.tasks.Task`.
        predictions: The head's output, as `model.predict` gives it.
        threshold: Probability at or above which a binary or multi-label
            output counts as 1.

    Returns:
        A dict of named tensors: `<task>` (the head's output, float32) and,
        depending on the task, `<task>_class_ids`, `<task>_class_names`,
        `<task>_labels`, `<task>_label_names` (see the module docstring).

    Example:

    >>> from keras_mtl.tasks import MulticlassClassification
    >>> task = MulticlassClassification("shape", 3, class_names=["a", "b", "c"])
    >>> out = task_outputs(task, tf.constant([[0.1, 0.7, 0.2]]))
    >>> out["shape_class_ids"].numpy(), out["shape_class_names"].numpy()
    (array([1], dtype=int32), array([b'b'], dtype=object))
    """
    name = task.name
    y = tf.cast(predictions, tf.float32)
    outputs = {name: y}
    if isinstance(task, (tasks_lib.MulticlassClassification, tasks_lib.Segmentation)):
        ids = tf.argmax(y, axis=-1, output_type=tf.int32)
        outputs[f"{name}_class_ids"] = ids
        if task.class_names:
            outputs[f"{name}_class_names"] = tf.gather(tf.constant(task.class_names), ids)
    elif isinstance(task, tasks_lib.BinaryClassification):
        outputs[f"{name}_class_ids"] = tf.cast(y[..., 0] >= threshold, tf.int32)
    elif isinstance(task, tasks_lib.MultilabelClassification):
        on = y >= threshold
        outputs[f"{name}_labels"] = tf.cast(on, tf.int32)
        if task.label_names:
            names = tf.broadcast_to(tf.constant(task.label_names), tf.shape(y))
            outputs[f"{name}_label_names"] = tf.where(on, names, "")
    return outputs


def _decode_images(encoded, image_shape, dtype):
    """Encoded images (a `tf.string` batch) to a float batch of `image_shape`."""
    height, width, channels = image_shape

    def decode(one):
        image = tf.io.decode_image(one, channels=channels, expand_animations=False)
        # Bilinear, aspect ratio not kept: the model was trained on
        # `image_shape` images; at that very size this is the identity.
        return tf.image.resize(image, (height, width))

    images = tf.map_fn(
        decode, encoded,
        fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32),
    )
    return tf.cast(images, dtype)


def _serving_archive(model, input_name, task_signatures, image_bytes, threshold):
    tasks = {t.name: t for t in model.tasks}
    spec = input_spec(model, input_name)

    def postprocess(predictions):
        outputs = {}
        for name, y in predictions.items():
            outputs.update(task_outputs(tasks[name], y, threshold))
        return outputs

    def serve(images):
        return postprocess(model(images, training=False))

    def serve_task(name):
        def serve_one(images):
            z = model.representation(images, training=False)
            return postprocess({name: model.heads[name](model.head_input(z, name), training=False)})

        return serve_one

    archive = keras.export.ExportArchive()
    archive.add_endpoint(DEFAULT_SIGNATURE, serve, [spec])
    if image_bytes:
        bytes_spec = tf.TensorSpec((None,), tf.string, name=f"{input_name}_bytes")
        archive.add_endpoint(
            BYTES_SIGNATURE,
            lambda encoded: serve(_decode_images(encoded, model.image_shape, spec.dtype)),
            [bytes_spec],
        )
    for name in task_signatures:
        archive.add_endpoint(f"{TASK_SIGNATURE_PREFIX}{name}", serve_task(name), [spec])
    return archive


def export_saved_model(
    model,
    export_dir,
    *,
    version=None,
    input_name="image",
    task_signatures=None,
    image_bytes=False,
    threshold=0.5,
    overwrite=False,
):
    """Exports a multi-task model as a SavedModel for TF Serving.

    TF Serving serves `<base>/<version>/` directories and loads the highest
    version by default. `version=None` follows that layout two ways:
    `export_dir` ending in a number (`"serving/hydranet/1"`) is the version
    directory itself; any other `export_dir` is the base, and the export
    becomes its next version (one more than the largest numeric
    sub-directory, 1 for a new base), so exporting again publishes a new
    version that a running server picks up.

    Signatures and outputs are described in the module docstring: a
    `serving_default` with every task, one `serve_<task>` signature per task,
    and with `image_bytes=True` a `serving_bytes` signature taking encoded
    images. Only inference state is written (no weighting variables, no
    optimizer), and nothing is left half-written if the export fails.

    Args:
        model: A built `keras_mtl.MultiTaskModel` (TensorFlow backend).
        export_dir: The version directory, or the model's base directory
            (see above).
        version: None, or an integer >= 0: the export goes to
            `<export_dir>/<version>`.
        input_name: Name of the image input of the signatures (the key of
            a REST request's instances); the bytes signature's input is
            `<input_name>_bytes`.
        task_signatures: Tasks that get their own `serve_<task>` signature:
            None for every task, or a list of task names (`[]` for none).
        image_bytes: Whether to add the `serving_bytes` signature.
        threshold: Probability at or above which binary and multi-label
            outputs count as 1 (`<task>_class_ids`, `<task>_labels`).
        overwrite: Whether to replace an existing, non-empty version
            directory (otherwise an error).

    Returns:
        The absolute path of the version directory written.

    Example:

    >>> import os, tempfile, keras, keras_mtl
    >>> trunk = keras.Sequential([keras.Input((16, 16, 3)),
    ...                           keras.layers.Conv2D(4, 3, strides=2)])
    >>> model = keras_mtl.MultiTaskModel(trunk, [
    ...     keras_mtl.tasks.MulticlassClassification(
    ...         "shape", 3, class_names=["circle", "square", "triangle"]),
    ...     keras_mtl.tasks.Regression("size")], head_units=(8,))
    >>> base = tempfile.mkdtemp()
    >>> path = export_saved_model(model, base)
    >>> os.path.basename(path)
    '1'
    >>> served = tf.saved_model.load(path)
    >>> sorted(served.signatures)
    ['serve_shape', 'serve_size', 'serving_default']
    >>> out = served.signatures["serving_default"](image=tf.zeros((2, 16, 16, 3)))
    >>> sorted(out)
    ['shape', 'shape_class_ids', 'shape_class_names', 'size']
    """
    check_model(model)
    input_name = check_input_name(input_name)
    task_signatures = _check_task_signatures(model, task_signatures)
    image_bytes = check_bool("image_bytes", image_bytes)
    overwrite = check_bool("overwrite", overwrite)
    threshold = _check_threshold(threshold)
    for task in model.tasks:
        _check_names(task)
    if image_bytes:
        _check_image_input(model)
    target = versioning.version_dir(export_dir, version)
    versioning.check_overwrite_target(target, overwrite, "directory")

    archive = _serving_archive(model, input_name, task_signatures, image_bytes, threshold)
    return versioning.replace_atomically(
        lambda tmp: archive.write_out(tmp, verbose=False), target, is_dir=True
    )


def _check_image_input(model):
    if model.image_shape is None:
        raise ValueError(
            "Invalid value received for argument `image_bytes`. Encoded images "
            "are decoded for a model with one image input; this model has "
            f"several inputs {[t.name for t in model.inputs]}."
        )
    shape, dtype = tuple(model.image_shape), model.inputs[0].dtype
    if (
        len(shape) != 3
        or None in shape
        or shape[-1] not in (1, 3, 4)
        or ("float" not in str(dtype) and "int" not in str(dtype))
    ):
        raise ValueError(
            "Invalid value received for argument `image_bytes`. Encoded images "
            "can be decoded for a model whose input is fixed-size images "
            "(height, width, 1, 3 or 4 channels) of numbers. This model's "
            f"input: shape {shape}, dtype {dtype}."
        )
