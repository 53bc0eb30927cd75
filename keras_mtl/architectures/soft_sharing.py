"""Soft parameter sharing: one tower per task, tied by an L2 penalty.

- Duong, Cohn, Bird & Cook, "Low Resource Dependency Parsing: Cross-lingual
  Parameter Sharing in a Neural Network Parser", ACL 2015: two parsers (here,
  towers) with their own parameters, and an L2 penalty on the distance
  between corresponding parameters added to the training loss;
- Yang & Hospedales, "Trace Norm Regularised Deep Multi-Task Learning",
  ICLR 2017 workshop: the same idea with a trace-norm penalty on the stacked
  parameters. Only the L2 form is implemented here.

Seed 003 calls this "soft parameter sharing": every task has its own copy of
the backbone, and

    penalty = strength · Σ_{i<j} Σ_w ||W_i − W_j||²

over the pairs of towers `(i, j)` and their corresponding trainable weights
`w` joins the loss. `strength = 0` gives independent towers (one model per
task); a large strength pulls the towers towards one shared network.
"""

import keras
from keras import ops

from keras_mtl._validation import check_bool
from keras_mtl._validation import check_non_negative
from keras_mtl.architectures.base import Architecture
from keras_mtl.architectures.base import check_task_names


@keras.saving.register_keras_serializable(package="keras_mtl")
class SoftSharingPenalty(keras.layers.Layer):
    """The task towers and the L2 penalty that ties their weights.

    Calling the layer runs every tower on the same input and adds
    `strength · Σ_{i<j} Σ_w ||W_i − W_j||²` (over corresponding trainable
    weights) with `add_loss`, so it appears in `model.losses` and Keras adds
    it to the training loss. The towers are held (and saved) by this layer.

    Args:
        towers: Dict `{task: keras.Model}` of models with the same
            architecture (e.g. clones of one backbone).
        strength: Non-negative factor of the penalty.
        **kwargs: Base layer arguments (`name`, ...).

    Returns:
        `{task: towers[task](inputs)}`.

    Example:

    >>> import keras
    >>> def tower(value):
    ...     layer = keras.layers.Dense(1, kernel_initializer="zeros",
    ...                                bias_initializer=keras.initializers.Constant(value))
    ...     return keras.Sequential([keras.Input((2,)), layer])
    >>> layer = SoftSharingPenalty({"a": tower(1.0), "b": tower(3.0)}, strength=0.5)
    >>> float(layer.penalty())  # 0.5 * (1 - 3)^2 (the kernels are equal)
    2.0
    >>> outputs = layer(keras.ops.ones((4, 2)))
    >>> [float(loss) for loss in layer.losses]
    [2.0]
    """

    def __init__(self, towers, strength=1e-3, **kwargs):
        super().__init__(**kwargs)
        if (
            not isinstance(towers, dict)
            or not towers
            or not all(isinstance(t, str) and isinstance(m, keras.Model) for t, m in towers.items())
        ):
            raise ValueError(
                "Invalid value received for argument `towers`. Expected a "
                f"non-empty dict {{task: keras.Model}}. Received: towers={towers!r}"
            )
        shapes = {t: [tuple(w.shape) for w in m.trainable_weights] for t, m in towers.items()}
        first = next(iter(shapes))
        different = [t for t in shapes if shapes[t] != shapes[first]]
        if different:
            raise ValueError(
                "Invalid value received for argument `towers`. Expected towers "
                "with the same trainable weight shapes (one architecture). "
                f"Towers {different} differ from {first!r}."
            )
        self.towers = dict(towers)
        self.strength = check_non_negative("strength", strength)

    def build(self, input_shape):
        for tower in self.towers.values():
            if not tower.built:
                tower.build(input_shape)

    def penalty(self):
        """`strength · Σ_{i<j} Σ_w ||W_i − W_j||²`, a float32 scalar."""
        towers = [m.trainable_weights for m in self.towers.values()]
        total = ops.zeros((), "float32")
        for i in range(len(towers)):
            for j in range(i + 1, len(towers)):
                for w_i, w_j in zip(towers[i], towers[j]):
                    difference = ops.cast(w_i, "float32") - ops.cast(w_j, "float32")
                    total = total + ops.sum(ops.square(difference))
        return self.strength * total

    def call(self, inputs, training=None):
        self.add_loss(self.penalty())
        return {t: tower(inputs, training=training) for t, tower in self.towers.items()}

    def compute_output_spec(self, inputs, training=None):
        return {t: tower.compute_output_spec(inputs) for t, tower in self.towers.items()}

    def get_config(self):
        return {
            **super().get_config(),
            "towers": {
                t: keras.saving.serialize_keras_object(m) for t, m in self.towers.items()
            },
            "strength": self.strength,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["towers"] = {
            t: keras.saving.deserialize_keras_object(m) for t, m in config["towers"].items()
        }
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_mtl")
class SoftSharing(Architecture):
    """Soft parameter sharing (Duong et al. 2015): a tower per task.

    An architecture for `keras_mtl.build_model(..., architecture=...)`: each
    task gets its own copy of the backbone (`keras.models.clone_model`) and
    the trunk maps images to `{task: its tower's output}`; a
    `SoftSharingPenalty` adds `strength · Σ_{i<j} Σ_w ||W_i − W_j||²` to the
    training loss.

    Args:
        strength: Non-negative factor of the L2 penalty between towers.
        share_initial_weights: `True` (default) starts every tower from the
            backbone's weights (a pretrained backbone stays pretrained; the
            penalty starts at 0); `False` keeps each clone's own random
            initialisation.

    Example:

    >>> import keras
    >>> backbone = keras.Sequential([keras.Input((16, 16, 3)),
    ...                              keras.layers.Conv2D(4, 3, strides=2)])
    >>> trunk = SoftSharing(strength=0.01).build_trunk(backbone, ["age", "gender"])
    >>> {name: tuple(z.shape) for name, z in trunk.output.items()}
    {'age': (None, 7, 7, 4), 'gender': (None, 7, 7, 4)}
    >>> len(trunk.trainable_variables)  # two towers of (kernel, bias)
    4
    """

    def __init__(self, strength=1e-3, share_initial_weights=True):
        self.strength = check_non_negative("strength", strength)
        self.share_initial_weights = check_bool("share_initial_weights", share_initial_weights)

    def build_trunk(self, backbone, task_names):
        """The trunk: backbone input to `{task: tower output}`.

        Args:
            backbone: A Functional or Sequential `keras.Model` with one input.
            task_names: The task names (the output keys).

        Returns:
            A Functional `keras.Model` holding one tower per task.
        """
        task_names = check_task_names(task_names)
        if not isinstance(backbone, keras.Model) or len(backbone.inputs or []) != 1:
            raise ValueError(
                "Invalid value received for argument `backbone`. Expected a "
                f"`keras.Model` with one input. Received: backbone={backbone!r}"
            )

        # === Layers ===
        towers = {}
        for task in task_names:
            clone = keras.models.clone_model(backbone)
            # A Functional wrapper gives the tower its task's name.
            towers[task] = keras.Model(clone.inputs[0], clone.outputs[0], name=f"{task}_tower")
            if self.share_initial_weights:
                towers[task].set_weights(backbone.get_weights())
        penalty = SoftSharingPenalty(towers, strength=self.strength, name="soft_sharing")

        # === Functional Model ===
        inputs = keras.Input(
            shape=tuple(backbone.inputs[0].shape[1:]), dtype=backbone.inputs[0].dtype
        )
        return keras.Model(inputs, penalty(inputs), name=f"{backbone.name}_soft_sharing")

    def get_config(self):
        return {"strength": self.strength, "share_initial_weights": self.share_initial_weights}
