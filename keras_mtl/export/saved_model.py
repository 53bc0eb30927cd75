"""Export for inference: a SavedModel for TF Serving, a `.tflite` file.

`export_saved_model` writes the layout TF Serving loads, `<base>/<version>/`,
with post-processing inside the graph, so a client gets answers rather than
logits:

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
  in, every task's outputs out;
- `serve_<task>`: the same input, one task's outputs; it runs the trunk and
  that task's head only;
- `serving_bytes` (with `image_bytes=True`): a batch of encoded JPEG / PNG /
  GIF / BMP images (`tf.string`, input `<input_name>_bytes`, which TF Serving's
  REST API reads from `{"b64": ...}`), decoded and resized to the model's input
  size in the graph, every task's outputs out.

The SavedModel holds the variables those functions read and nothing else: no
loss-weighting state, no optimizer, no metrics (Keras' `ExportArchive`
tracks the variables the endpoints use; the model itself is not tracked).

`rest_predict` answers a TF Serving REST `:predict` body with a loaded
SavedModel, as the server would, to try a request without a server.

`export_tflite` converts the same forward pass (each head's output, keyed by
task) to TFLite, optionally quantised (dynamic range, float16 or full int8),
for on-device, real-time use (seed 000: pruning and quantisation).

Files appear whole or not at all: the export is written next to its target
under a hidden, non-numeric name (which TF Serving ignores), then renamed.
"""

import base64
import json
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_mtl import tasks as tasks_lib
from keras_mtl._validation import check_bool
from keras_mtl.models import MultiTaskModel

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
TASK_SIGNATURE_PREFIX = "serve_"
QUANTIZATIONS = (None, "dynamic", "float16", "int8")


# --- checks ---------------------------------------------------------------------
def _check_model(model):
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


def _check_input_name(input_name):
    if not isinstance(input_name, str) or not input_name.isidentifier():
        raise ValueError(
            "Invalid value received for argument `input_name`. Expected a "
            "name made of letters, digits and underscores, not starting with "
            f"a digit (e.g. 'image'). Received: input_name={input_name!r}"
        )
    return input_name


def _check_threshold(threshold):
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
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


def _check_overwrite_target(path, overwrite, kind):
    """Refuses an existing, non-empty target unless `overwrite`; early."""
    if not os.path.lexists(path):
        return
    if kind == "directory" and not os.path.isdir(path):
        raise ValueError(
            "Invalid value received for argument `export_dir`. Expected a "
            f"directory path; {path!r} exists and is not a directory."
        )
    if kind == "file" and os.path.isdir(path):
        raise ValueError(
            "Invalid value received for argument `path`. Expected a file path; "
            f"{path!r} is a directory."
        )
    if overwrite:
        return
    if kind == "file":
        raise ValueError(
            f"Invalid value received for argument `path`: {path!r} already "
            "exists. Pass `overwrite=True` to replace it, or another path."
        )
    if os.listdir(path):
        raise ValueError(
            f"Invalid value received for argument `export_dir`: {path!r} already "
            "exists and is not empty. Pass `overwrite=True` to replace it, or "
            "another path or `version`."
        )


# --- TF Serving layout ------------------------------------------------------------
_VERSION = re.compile(r"[0-9]+")


def _version_dir(export_dir, version):
    """`<export_dir>/<version>`; see `export_saved_model` for `version=None`."""
    try:
        export_dir = os.fspath(export_dir)
    except TypeError:
        export_dir = None
    if not isinstance(export_dir, str) or not export_dir:
        raise ValueError(
            "Invalid value received for argument `export_dir`. Expected a "
            f"non-empty path. Received: export_dir={export_dir!r}"
        )
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(
            "Invalid value received for argument `export_dir`. Expected a "
            f"directory path; {export_dir!r} exists and is not a directory."
        )
    if version is None:
        if _VERSION.fullmatch(os.path.basename(os.path.normpath(export_dir))):
            return export_dir
        existing = []
        if os.path.isdir(export_dir):
            existing = [int(d) for d in os.listdir(export_dir) if _VERSION.fullmatch(d)]
        return os.path.join(export_dir, str(max(existing, default=0) + 1))
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(
            "Invalid value received for argument `version`. Expected None or "
            f"an integer >= 0 (TF Serving's version directories are numbers). "
            f"Received: version={version!r}"
        )
    return os.path.join(export_dir, str(version))


def _replace_atomically(write, target, is_dir):
    """Runs `write(tmp)` on a hidden sibling of `target`, then renames it.

    A failure leaves nothing behind and `target` as it was. The temporary
    name starts with a dot and is not a number, so TF Serving, which watches
    the base directory for numeric versions, never sees a half-written one.
    """
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    if is_dir:
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    else:
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=parent)
        os.close(handle)
    replaced = None
    try:
        write(tmp)
        if is_dir and os.path.isdir(target):
            # A directory cannot be renamed over a non-empty one: move the
            # old version aside first, put it back if the second rename fails.
            replaced = f"{tmp}.replaced"
            os.rename(target, replaced)
        os.replace(tmp, target)
    except BaseException:
        if replaced is not None and not os.path.exists(target):
            os.rename(replaced, target)
            replaced = None
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    return target


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
    spec = tf.TensorSpec(
        (None, *model.image_shape), model.inputs[0].dtype, name=input_name
    )

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

    >>> import tempfile, keras, keras_mtl
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
    _check_model(model)
    input_name = _check_input_name(input_name)
    task_signatures = _check_task_signatures(model, task_signatures)
    image_bytes = check_bool("image_bytes", image_bytes)
    overwrite = check_bool("overwrite", overwrite)
    threshold = _check_threshold(threshold)
    for task in model.tasks:
        _check_names(task)
    if image_bytes:
        _check_image_input(model)
    target = _version_dir(export_dir, version)
    _check_overwrite_target(target, overwrite, "directory")

    archive = _serving_archive(model, input_name, task_signatures, image_bytes, threshold)
    return _replace_atomically(
        lambda tmp: archive.write_out(tmp, verbose=False), target, is_dir=True
    )


def _check_image_input(model):
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


# --- TF Serving's REST API, locally ------------------------------------------------
def rest_predict(saved_model, body):
    """Answers a TF Serving REST `:predict` request body, without a server.

    Follows TF Serving's REST API: the body names a `signature_name`
    (default `serving_default`) and gives inputs either in row format,
    `{"instances": [...]}` (one value per example, or one
    `{input_name: value}` object per example), or in columnar format,
    `{"inputs": value}` / `{"inputs": {input_name: value}}`. Binary strings
    are `{"b64": "<base64>"}`. The answer has the shape TF Serving returns:
    `{"predictions": [...]}` for rows (one value per example when the
    signature has one output, else one `{output: value}` object per example)
    and `{"outputs": ...}` for columns (the value, or `{output: value}`).

    Args:
        saved_model: A SavedModel loaded by `tf.saved_model.load`.
        body: The request body: a dict, or its JSON text.

    Returns:
        The response body as a JSON-serialisable dict.

    Example:

    >>> import tempfile, keras, keras_mtl
    >>> trunk = keras.Sequential([keras.Input((16, 16, 3)),
    ...                           keras.layers.Conv2D(4, 3, strides=2)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.BinaryClassification("big")], head_units=(8,))
    >>> served = tf.saved_model.load(export_saved_model(model, tempfile.mkdtemp()))
    >>> image = np.zeros((16, 16, 3)).tolist()
    >>> response = rest_predict(served, {"instances": [image, image]})
    >>> [sorted(p) for p in response["predictions"]]
    [['big', 'big_class_ids'], ['big', 'big_class_ids']]
    """
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    if not isinstance(body, dict):
        raise ValueError(
            "Invalid value received for argument `body`. Expected a JSON object "
            f"(dict). Received: body of type {type(body).__name__}"
        )
    signature_name = body.get("signature_name", DEFAULT_SIGNATURE)
    if signature_name not in saved_model.signatures:
        raise ValueError(
            f"Invalid request: no signature {signature_name!r} in the SavedModel. "
            f"Available signatures: {sorted(saved_model.signatures)}"
        )
    signature = saved_model.signatures[signature_name]
    specs = signature.structured_input_signature[1]
    if ("instances" in body) == ("inputs" in body):
        raise ValueError(
            "Invalid request: expected exactly one of 'instances' (row format) "
            f"and 'inputs' (columnar format). Received keys: {sorted(body)}"
        )
    rows = "instances" in body
    if rows:
        inputs = _rows_to_columns(body["instances"], specs)
    else:
        inputs = body["inputs"]
        # An object maps input names to values; anything else is the value
        # of the only input.
        if len(specs) == 1 and not (isinstance(inputs, dict) and not _is_b64(inputs)):
            inputs = {next(iter(specs)): inputs}
    if not isinstance(inputs, dict) or set(inputs) != set(specs):
        raise ValueError(
            f"Invalid request: signature {signature_name!r} takes the inputs "
            f"{sorted(specs)}. Received: {sorted(inputs) if isinstance(inputs, dict) else inputs!r}"
        )
    tensors = {name: _to_tensor(name, value, specs[name]) for name, value in inputs.items()}
    outputs = {
        name: _to_json(tensor.numpy(), binary=name.endswith("_bytes"))
        for name, tensor in sorted(signature(**tensors).items())
    }
    if not rows:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    batch = {len(v) for v in outputs.values()}
    if len(batch) != 1:
        raise ValueError(
            "Invalid request: row format needs outputs with one batch size; "
            f"received outputs of batch sizes {sorted(batch)}. Use 'inputs'."
        )
    return {
        "predictions": [
            {name: value[i] for name, value in outputs.items()} for i in range(batch.pop())
        ]
    }


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _rows_to_columns(instances, specs):
    if not isinstance(instances, list) or not instances:
        raise ValueError(
            "Invalid request: 'instances' must be a non-empty list (one item "
            f"per example). Received: {type(instances).__name__}"
        )
    named = [isinstance(row, dict) and not _is_b64(row) for row in instances]
    if not any(named):
        if len(specs) != 1:
            raise ValueError(
                f"Invalid request: the signature takes several inputs {sorted(specs)}; "
                "each instance must be an object {input_name: value}."
            )
        return {next(iter(specs)): instances}
    if not all(named):
        raise ValueError(
            "Invalid request: mix of named ({input: value}) and plain instances."
        )
    columns = {name: [] for name in specs}
    for i, row in enumerate(instances):
        if set(row) != set(specs):
            raise ValueError(
                f"Invalid request: instance {i} has the inputs {sorted(row)}; the "
                f"signature takes {sorted(specs)}."
            )
        for name in specs:
            columns[name].append(row[name])
    return columns


def _to_tensor(name, value, spec):
    if spec.dtype == tf.string:
        value = np.array(_decode_strings(value), dtype=object)
    else:
        try:
            value = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Invalid request: input {name!r} expects {spec.dtype.name} values "
                f"(nested lists of numbers). Received: {error}"
            ) from None
    if not spec.shape.is_compatible_with(value.shape):
        raise ValueError(
            f"Invalid request: input {name!r} expects shape "
            f"{tuple(spec.shape.as_list())} (None: any size), received shape "
            f"{value.shape}."
        )
    return tf.constant(value, dtype=spec.dtype)


def _decode_strings(value):
    if _is_b64(value):
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    raise ValueError(
        "Invalid request: a string input takes strings or {'b64': ...} "
        f"objects. Received: {value!r}"
    )


def _to_json(array, binary):
    def convert(value):
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, bytes):
            if binary:
                return {"b64": base64.b64encode(value).decode("ascii")}
            return value.decode("utf-8")
        return value

    return convert(array.tolist())


# --- TFLite ---------------------------------------------------------------------------
def export_tflite(
    model,
    path,
    *,
    quantization=None,
    representative_data=None,
    input_name="image",
    overwrite=False,
):
    """Converts a multi-task model to a TFLite flat buffer.

    The `.tflite` model has one signature, `serving_default`: the image
    input `input_name` (batch size free, float32 for image models) and one
    output per task, named after it: the head's output as `model.predict`
    gives it (probabilities or values). Class ids and names are left to the
    application (TFLite's builtin ops carry no strings).

    Quantization:

    - `None`: float32, the same numbers as Keras;
    - `"dynamic"`: weights stored as int8 and dequantised on the fly
      (TFLite leaves tensors under 1024 values, e.g. small heads, in float);
    - `"float16"`: weights stored as float16 (half the size, GPU delegates
      run it in float16);
    - `"int8"`: full integer quantisation of weights and activations,
      calibrated on `representative_data`; every op must have an int8
      kernel (the conversion fails otherwise, rather than keep float ops
      silently). Input and outputs stay float32 (quantised at the edges).

    Args:
        model: A built `keras_mtl.MultiTaskModel` (TensorFlow backend).
        path: Where to write the model; must end with `.tflite`.
        quantization: One of `None`, `"dynamic"`, `"float16"`, `"int8"`.
        representative_data: For `"int8"` only, and required there: images
            covering the inputs the model will see (about 100 suffice), as
            an array `(N, height, width, channels)` or a `tf.data.Dataset`
            of images or `(images, labels)`, batched or not. All are used.
        input_name: Name of the input in the TFLite signature.
        overwrite: Whether to replace an existing file at `path`.

    Returns:
        `path`.

    Example:

    >>> import tempfile, keras, keras_mtl
    >>> trunk = keras.Sequential([keras.Input((16, 16, 3)),
    ...                           keras.layers.Conv2D(4, 3, strides=2)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.Regression("size")], head_units=(8,))
    >>> path = export_tflite(model, os.path.join(tempfile.mkdtemp(), "m.tflite"),
    ...                      quantization="float16")
    >>> os.path.getsize(path) > 0
    True
    """
    _check_model(model)
    input_name = _check_input_name(input_name)
    overwrite = check_bool("overwrite", overwrite)
    if not (isinstance(quantization, str) or quantization is None) or (
        quantization not in QUANTIZATIONS
    ):
        raise ValueError(
            "Invalid value received for argument `quantization`. Expected one "
            f"of {QUANTIZATIONS}. Received: quantization={quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "Invalid value received for argument `representative_data`. "
            "quantization='int8' calibrates activation ranges on it: expected "
            "an array or a tf.data.Dataset of images. Received: "
            "representative_data=None"
        )
    if quantization != "int8" and representative_data is not None:
        raise ValueError(
            "Invalid value received for argument `representative_data`. It is "
            "used by quantization='int8' only. Received it with "
            f"quantization={quantization!r}"
        )
    try:
        path = os.fspath(path)
    except TypeError:
        pass
    if not isinstance(path, str) or not path.endswith(".tflite"):
        raise ValueError(
            "Invalid value received for argument `path`. Expected a file path "
            f"ending with '.tflite'. Received: path={path!r}"
        )
    _check_overwrite_target(path, overwrite, "file")
    samples = None
    if representative_data is not None:
        samples = _representative_samples(model, representative_data)

    spec = tf.TensorSpec((None, *model.image_shape), model.inputs[0].dtype, name=input_name)
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        DEFAULT_SIGNATURE,
        lambda images: {
            name: tf.cast(y, tf.float32)
            for name, y in model(images, training=False).items()
        },
        [spec],
    )
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = lambda: ([x] for x in samples())
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        flatbuffer = converter.convert()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(flatbuffer)

    _replace_atomically(write, path, is_dir=False)
    return path


def _representative_samples(model, data):
    """A function returning a fresh iterator over single-image batches."""
    image_shape = tuple(model.image_shape)
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, tuple):
            spec = spec[0]
        shape = tuple(spec.shape)
        batched = len(shape) == len(image_shape) + 1
        ok = isinstance(spec, tf.TensorSpec) and tf.TensorShape(
            shape[1:] if batched else shape
        ).is_compatible_with(image_shape)

        def samples():
            for element in data:
                images = element[0] if isinstance(element, tuple) else element
                images = np.asarray(images, np.float32)
                for image in images if batched else [images]:
                    yield image[None]
    else:
        array = np.asarray(data, np.float32) if isinstance(data, (np.ndarray, list)) else None
        ok = (
            array is not None
            and array.ndim == len(image_shape) + 1
            and len(array) > 0
            and tuple(array.shape[1:]) == image_shape
        )

        def samples():
            for image in array:
                yield image[None]

    if not ok:
        raise ValueError(
            "Invalid value received for argument `representative_data`. Expected "
            f"images of shape {image_shape}: an array (N, {', '.join(map(str, image_shape))}) "
            "or a tf.data.Dataset of images or (images, labels), batched or not. "
            f"Received: {_describe(data)}"
        )
    return samples


def _describe(data):
    if isinstance(data, tf.data.Dataset):
        return f"a tf.data.Dataset with element_spec {data.element_spec}"
    if isinstance(data, np.ndarray):
        return f"an array of shape {data.shape}"
    return f"{type(data).__name__}"
