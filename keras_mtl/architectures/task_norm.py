"""Task-specific batch normalisation: shared weights, per-task statistics.

The "task-specific normalisation" of seed 000, in the form of

- Bilen & Vedaldi, "Universal representations: The missing link between
  faces, text, planktons, and cat breeds", arXiv:1701.07275 (2017): one
  network whose convolutions are shared by all domains, with domain-specific
  batch normalisation (statistics and scale/offset) as the only
  domain-specific parameters;
- Chang, You, Seo, Kwak & Han, "Domain-Specific Batch Normalization for
  Unsupervised Domain Adaptation", CVPR 2019: the same split, one set of
  batch-norm layers per domain.

Here a task plays the role of a domain: the backbone runs once per task,
with every layer shared except its `BatchNormalization` layers, of which
each task has its own copy (its moving mean and variance, `gamma` and
`beta`). The copies start from the backbone's batch-norm weights, so a
pretrained backbone stays pretrained for every task. Cost: T forward passes
of the backbone; parameters: the backbone's plus `T - 1` sets of batch-norm
parameters.
"""

import keras

from keras_mtl import _keras_compat
from keras_mtl.architectures.base import Architecture
from keras_mtl.architectures.base import check_task_names


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskSpecificBatchNorm(Architecture):
    """Task-specific batch normalisation over a shared backbone.

    An architecture for `keras_mtl.build_model(..., architecture=...)`: the
    trunk maps images to `{task: the backbone's output computed with that
    task's batch-norm layers}`. All other layers (convolutions, dense
    layers, ...) are the backbone's own, shared by the tasks.

    Batch-norm layers inside a model nested in the backbone cannot be
    specialised (a nested model is one layer of the backbone's graph); such
    a backbone is refused, as is one without batch normalisation.

    Example:

    >>> import keras
    >>> inputs = keras.Input((16, 16, 3))
    >>> x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
    >>> x = keras.layers.BatchNormalization()(x)
    >>> backbone = keras.Model(inputs, x)
    >>> trunk = TaskSpecificBatchNorm().build_trunk(backbone, ["age", "gender"])
    >>> {name: tuple(z.shape) for name, z in trunk.output.items()}
    {'age': (None, 7, 7, 4), 'gender': (None, 7, 7, 4)}
    >>> len(trunk.trainable_variables)  # conv kernel and bias + 2 x (gamma, beta)
    6
    """

    def build_trunk(self, backbone, task_names):
        """The trunk: backbone input to `{task: backbone output}`.

        Args:
            backbone: A Functional or Sequential `keras.Model` with one input
                and at least one `BatchNormalization` layer.
            task_names: The task names (the output keys).

        Returns:
            A Functional `keras.Model`; its non-batch-norm layers are the
            backbone's own layer objects.
        """
        task_names = check_task_names(task_names)
        backbone = _functional(backbone)
        _check_batch_norm(backbone)

        inputs = keras.Input(
            shape=tuple(backbone.inputs[0].shape[1:]),
            dtype=backbone.inputs[0].dtype,
        )
        outputs, copies = {}, []
        for task in task_names:

            def task_layer(layer, task=task):
                if not isinstance(layer, keras.layers.BatchNormalization):
                    return layer  # shared: the same layer object for every task
                config = {**layer.get_config(), "name": f"{layer.name}_{task}"}
                copy = type(layer).from_config(config)
                copies.append((layer, copy))
                return copy

            # `input_tensors` makes the clone a graph on the shared `inputs`,
            # so the trunk below is one flat graph: shared layers are called
            # once per task, which `.keras` files keep shared.
            tower = keras.models.clone_model(
                backbone, input_tensors=inputs, clone_function=task_layer
            )
            outputs[task] = tower.outputs[0]
        trunk = keras.Model(inputs, outputs, name=f"{backbone.name}_task_batch_norm")
        for original, copy in copies:
            copy.set_weights(original.get_weights())
        return trunk

    def get_config(self):
        return {}


def _functional(backbone):
    """The backbone as a Functional model with a single input and output
    tensor (not lists), keeping its layers."""
    if not _is_graph_model(backbone) or len(backbone.inputs) != 1:
        raise ValueError(
            "Invalid value received for argument `backbone`. Expected a "
            "Functional or Sequential `keras.Model` with one input (its layers "
            f"are re-used). Received: backbone={backbone!r}"
        )
    return keras.Model(backbone.inputs[0], backbone.outputs[0], name=backbone.name)


def _is_graph_model(model):
    """Whether `model` is a Functional or (built) Sequential model.

    No public type tells a graph model from a subclassed one (every
    `keras.Model(inputs, outputs)` is a `keras.Model`); their public
    `inputs` and `outputs`, the symbolic tensors of the graph, do: a
    subclassed model has neither, an unbuilt Sequential model raises.
    """
    if not isinstance(model, keras.Model):
        return False
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:  # subclassed, or a Sequential model without inputs yet
        return False
    return all(
        isinstance(tensors, (list, tuple))
        and tensors
        and all(isinstance(t, keras.KerasTensor) for t in tensors)
        for tensors in (inputs, outputs)
    )


def _check_batch_norm(backbone):
    nested = [
        layer.name
        for layer in backbone.layers
        if isinstance(layer, keras.Model)
        and any(
            isinstance(l, keras.layers.BatchNormalization)
            for l in _keras_compat.flatten_layers(layer)
        )
    ]
    if nested:
        raise ValueError(
            "Invalid value received for argument `backbone`. Task-specific "
            "batch normalisation needs the BatchNormalization layers at the top "
            f"level of the backbone; {backbone.name!r} has some inside the "
            f"nested models {nested}."
        )
    if not any(isinstance(layer, keras.layers.BatchNormalization) for layer in backbone.layers):
        raise ValueError(
            "Invalid value received for argument `backbone`. Task-specific "
            "batch normalisation needs a backbone with BatchNormalization "
            f"layers; {backbone.name!r} has none."
        )
