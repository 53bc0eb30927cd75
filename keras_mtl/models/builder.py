"""`build_model`: a HydraNet from a backbone and a list of tasks.

The builder resolves the backbone (a `keras.applications` name or any
`keras.Model`, with its weights and preprocessing), applies the freezing
policy, and wires the heads with `MultiTaskModel`.
"""

from keras_mtl import tasks as tasks_lib
from keras_mtl._validation import is_int
from keras_mtl.backbones.graph import operations as _graph
from keras_mtl.backbones import cut_points
from keras_mtl.backbones import resolve_backbone
from keras_mtl.models.multi_task_model import MultiTaskModel


def build_model(
    backbone,
    tasks,
    input_shape=None,
    weights=None,
    head_units=(256,),
    dropout=0.0,
    trainable_backbone=True,
    freeze_blocks=0,
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
        freeze_blocks: Number of leading blocks of the backbone to freeze
            (seed 002: freeze the early blocks, fine-tune the rest). Block
            boundaries are `keras_mtl.backbones.cut_points(backbone)`; the
            layers up to the `freeze_blocks`-th boundary get
            `trainable=False`, so `fit` neither computes their gradients nor
            changes them. Batch normalization layers among them run in
            inference mode (Keras 3 does so for `trainable=False`), keeping
            their pretrained statistics. To fine-tune the rest at a smaller
            rate, compile with `keras_mtl.optimizers.fine_tuning`.
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
    _freeze_first_blocks(trunk, freeze_blocks)
    if architecture is not None:
        if isinstance(architecture, type) or not callable(
            getattr(architecture, "build_trunk", None)
        ):
            raise ValueError(
                "Invalid value received for argument `architecture`. Expected None "
                "or an instance with a `build_trunk(backbone, task_names)` method "
                "(see `keras_mtl.architectures`, e.g. `MMoE()`). Received: "
                f"architecture={architecture!r}"
            )
        attached = {t.name: t.attach_at for t in tasks if t.attach_at}
        if attached:
            raise ValueError(
                "Invalid value received for argument `architecture`. Tasks with "
                f"`attach_at` ({attached}) read backbone layers directly; an "
                "architecture builds every task's representation itself. Use one "
                f"or the other. Received: architecture={architecture!r}"
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


def _freeze_first_blocks(backbone, count):
    """Sets `trainable=False` on the layers up to the `count`-th cut point."""
    points = cut_points(backbone) if count else []
    if not is_int(count) or count > len(points):
        raise ValueError(
            "Invalid value received for argument `freeze_blocks`. Expected an "
            f"integer from 0 to {len(points)}, the number of blocks of "
            f"{backbone.name!r} (block ends: {[name for _, name in points]}). "
            f"Received: freeze_blocks={count!r}"
        )
    count = int(count)
    if count == 0:
        return
    # A cut point is only reached through its output: every operation
    # before it in the graph belongs to the frozen part.
    frozen = {name for name, _, _ in _graph(backbone)[: points[count - 1][0] + 1]}
    for layer in backbone.layers:
        if layer.name in frozen:
            layer.trainable = False
