"""Where the shared part ends: the trunk's output and what each head reads.

A trunk maps the (preprocessed) input to the shared representation `z`: a
feature map `(batch, h, w, c)` or a vector `(batch, features)`, read by every
head. It may also give each task its own representation, `{task: z_t}`:
the architectures of `keras_mtl.architectures`, or a backbone whose tasks
read other layers (`Task(..., attach_at=...)`, a branch point).
"""

import keras

from keras_mtl import _keras_compat


def trunk_output(trunk):
    """The trunk's symbolic output: a tensor, or `{task: tensor}`."""
    if isinstance(trunk, keras.Sequential):  # its `output` needs a call
        return trunk.outputs[0]
    return trunk.output


def input_structure(trunk):
    """The trunk's symbolic inputs: one tensor, or a dict / list of them for
    a trunk with several inputs (text backbones take token ids, segment ids
    and a padding mask; graph networks atoms and positions)."""
    inputs = trunk.inputs or []
    if len(inputs) == 1:
        return inputs[0]
    structure = trunk.input
    if isinstance(structure, dict):
        return dict(structure)
    return list(inputs)


def model_inputs(trunk):
    """New `keras.Input`s matching the trunk's inputs: one named "image",
    or, for several inputs, one per trunk input with the trunk's names
    (dict keys, or the input tensors' names)."""
    structure = input_structure(trunk)
    if not isinstance(structure, (dict, list)):
        return keras.Input(shape=structure.shape[1:], dtype=structure.dtype, name="image")

    def new_input(name, tensor):
        return keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)

    if isinstance(structure, dict):
        return {name: new_input(name, t) for name, t in structure.items()}
    return [new_input(t.name, t) for t in structure]


def input_names(inputs):
    """The names of a model's inputs (`model_inputs`' result)."""
    if isinstance(inputs, dict):
        return list(inputs)
    return [t.name for t in keras.tree.flatten(inputs)]


def head_input(z, name):
    """What head `name` reads from the representation `z`."""
    return z[name] if isinstance(z, dict) else z


def branched_trunk(trunk, tasks):
    """The trunk with each task's features read at its `attach_at` layer
    (the trunk's output for tasks without one): `{task: features}`."""
    names = [layer.name for layer in trunk.layers]
    outputs = {}
    for task in tasks:
        if not task.attach_at:
            outputs[task.name] = trunk.outputs[0]
            continue
        if task.attach_at not in names:
            raise ValueError(
                f"Invalid value received for argument `attach_at` of task {task.name!r}. "
                f"Expected the name of a layer of the backbone {trunk.name!r}: one of "
                f"{names}. Received: attach_at={task.attach_at!r}"
            )
        layer = trunk.get_layer(task.attach_at)
        calls = _keras_compat.call_count(layer)
        output = getattr(layer, "output", None) if calls == 1 else None
        if not isinstance(output, keras.KerasTensor) or len(output.shape) not in (2, 4):
            raise ValueError(
                f"Invalid value received for argument `attach_at` of task {task.name!r}. "
                f"Expected a layer called once with a feature-map or vector output; "
                f"{task.attach_at!r} is called {calls} times or gives "
                f"{getattr(output, 'shape', 'several outputs')}."
            )
        outputs[task.name] = output
    return keras.Model(trunk.inputs, outputs, name=trunk.name)


def feature_shapes(trunk, tasks):
    """`{task: shape of what its head reads}`, without the batch axis."""
    names = [t.name for t in tasks]
    output = trunk_output(trunk)
    if not isinstance(output, dict):
        return {n: tuple(output.shape[1:]) for n in names}
    if sorted(trunk.output) != sorted(names):
        raise ValueError(
            "Invalid value received for argument `trunk`. A trunk with per-task "
            f"outputs needs exactly one output per task {sorted(names)}. "
            f"Received outputs {sorted(trunk.output)}."
        )
    shapes = {n: tuple(trunk.output[n].shape[1:]) for n in names}
    bad = {n: s for n, s in shapes.items() if len(s) not in (1, 3)}
    if bad:
        raise ValueError(
            "Invalid value received for argument `trunk`. Expected each task's "
            "representation to be a feature map (batch, height, width, channels) "
            f"or a vector (batch, features). Received shapes {bad}."
        )
    return shapes
