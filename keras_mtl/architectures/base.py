"""`Architecture`: what `build_model(..., architecture=)` takes.

An architecture is plain configuration (serialisable, no layers of its own)
that turns a backbone into a trunk giving each task its own representation:
a Functional `keras.Model` from the backbone's input to `{task: z_t}`.
`MultiTaskModel` builds head t on `z_t`; the trunk, not the architecture, is
what a `.keras` file stores.
"""

from keras_mtl._validation import check_int


class Architecture:
    """Base class of `keras_mtl.architectures`' configuration classes.

    Subclasses implement `build_trunk` and `get_config` (their constructor's
    arguments).

    Example:

    >>> import keras
    >>> class Twin(Architecture):  # every task reads the backbone's output
    ...     def build_trunk(self, backbone, task_names):
    ...         task_names = check_task_names(task_names)
    ...         z = backbone.output
    ...         return keras.Model(backbone.inputs, {n: z for n in task_names})
    >>> inputs = keras.Input((8,))
    >>> backbone = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    >>> sorted(Twin().build_trunk(backbone, ["a", "b"]).output)
    ['a', 'b']
    """

    def build_trunk(self, backbone, task_names):
        """Returns the trunk: `backbone`'s input to `{task: representation}`."""
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def check_task_names(task_names):
    """The task names as a list; raises unless distinct non-empty strings."""
    names = list(task_names) if isinstance(task_names, (list, tuple)) else None
    if (
        not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            "Invalid value received for argument `task_names`. Expected a "
            "non-empty list of unique task names (strings). Received: "
            f"task_names={task_names!r}"
        )
    return names


def check_blocks(blocks, minimum):
    """The `blocks` argument of the branched architectures (MTAN, cross-stitch):
    `None`, an integer `>= minimum` (NumPy's too, returned as an `int`) or a
    list of distinct layer names (empty only when `minimum` is 0); raises a
    Keras-style `ValueError` otherwise."""
    if blocks is None:
        return None
    if isinstance(blocks, (list, tuple)):
        if (
            len(blocks) >= min(minimum, 1)
            and all(isinstance(b, str) for b in blocks)
            and len(set(blocks)) == len(blocks)
        ):
            return list(blocks)
    else:
        try:
            return check_int("blocks", blocks, minimum)
        except ValueError:
            pass
    integer = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise ValueError(
        f"Invalid value received for argument `blocks`. Expected None, {integer} "
        f"or a list of distinct layer names. Received: blocks={blocks!r}"
    )
