"""TF Serving's REST API, locally: `rest_predict` answers a `:predict`
request body with a loaded SavedModel, as the server would, to try a request
(and a client) without a server.
"""

import base64
import json

import numpy as np

from keras_mtl._optional import require
from keras_mtl.export.saved_model import DEFAULT_SIGNATURE

tf = require("tensorflow", "keras_mtl.export (SavedModel, TFLite)")


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
    >>> from keras_mtl.export import export_saved_model
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
