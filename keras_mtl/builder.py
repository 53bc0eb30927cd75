"""`build_model`: a HydraNet from a backbone and a list of tasks.

The builder resolves the backbone (a `keras.applications` name or any
`keras.Model`, with its weights and preprocessing), applies the freezing
policy, and wires the heads with `MultiTaskModel`.
"""

from keras_mtl import tasks as tasks_lib
from keras_mtl.backbones import resolve_backbone
from keras_mtl.model import MultiTaskModel


def build_model(
    backbone,
    tasks,
    input_shape=None,
    weights=None,
    head_units=(256,),
    dropout=0.0,
    trainable_backbone=True,
    architecture=None,
    name="multi_task_model",
):
    """Builds a multi-task model: one shared backbone, one head per task.

    Args:
        backbone: A `keras.applications` model name (case-insensitive, e.g.
            `"ResNet50"`, `"MobileNetV3Small"`) or any `keras.Model` mapping
            images to a feature map or a vector.
        tasks: List of `keras_mtl.tasks.Task` (unique names). One task gives a
            single-task baseline built the same way.
        input_shape: `(height, width, channels)` of the raw images (pixel
            values 0-255; the backbone's own preprocessing is inside the model).
        weights: `None` (random), `"imagenet"` (Keras' download and cache) or
            the path of a `.weights.h5` file for the backbone.
        head_units: Widths of the hidden layers of each head.
        dropout: Dropout rate in the heads.
        trainable_backbone: `False` freezes the backbone (only heads train).
        architecture: `None` (hard parameter sharing: every head reads the
            backbone's output) or one of `keras_mtl.architectures` (MMoE,
            PLE, MTAN, cross-stitch, ...), which turns the backbone into a
            trunk giving each task its own representation.
        name: Name of the model.

    Returns:
        A `keras_mtl.MultiTaskModel` whose outputs are a dict keyed by task
        name.

    Example:

    >>> import keras, keras_mtl
    >>> model = keras_mtl.build_model(
    ...     "MobileNetV3Small",
    ...     [keras_mtl.tasks.Regression("age", loss="mae"),
    ...      keras_mtl.tasks.BinaryClassification("gender")],
    ...     input_shape=(32, 32, 3), head_units=(16,))
    >>> outputs = model(keras.ops.zeros((2, 32, 32, 3)))
    >>> tuple(outputs["age"].shape), tuple(outputs["gender"].shape)
    ((2, 1), (2, 1))
    """
    tasks = tasks_lib.check_tasks(tasks)
    if not isinstance(trainable_backbone, bool):
        raise ValueError(
            "Invalid value received for argument `trainable_backbone`. Expected "
            f"True or False. Received: trainable_backbone={trainable_backbone!r}"
        )
    trunk, input_shape, preprocessing = resolve_backbone(backbone, input_shape, weights)
    trunk.trainable = trainable_backbone
    if architecture is not None:
        if not callable(getattr(architecture, "build_trunk", None)):
            raise ValueError(
                "Invalid value received for argument `architecture`. Expected None "
                "or an object with a `build_trunk(backbone, task_names)` method "
                "(see `keras_mtl.architectures`). Received: "
                f"architecture={architecture!r}"
            )
        trunk = architecture.build_trunk(trunk, [t.name for t in tasks])
    return MultiTaskModel(
        trunk,
        tasks,
        input_shape=input_shape,
        preprocessing=preprocessing,
        head_units=head_units,
        dropout=dropout,
        name=name,
    )
