"""`GradientWeighting`: the base class of gradient-level MTL methods.

Loss-level methods only see the task losses. Gradient-level methods (MGDA,
PCGrad, CAGrad, ...) see each task's gradient and combine them into one
update. `MultiTaskModel` computes the per-task gradients (`keras_mtl.training.step`)
in one of two modes, chosen by the method's `mode` argument:

- `"params"`: exact gradients of each task loss w.r.t. the shared (trunk)
  variables, flattened: `grads` has shape `(T, P)`.
- `"representation"`: gradients w.r.t. the shared representation `z`, the
  trunk's output: `grads` has shape `(T, batch, *z.shape[1:])`. The combined
  gradient is then back-propagated once through the trunk (the MGDA-UB trick
  of Sener & Koltun 2018), so the step costs about as much as plain training.

Task heads are always updated with their own task's gradient.

Most methods return a linear combination `Σ_i w_i g_i` whose coefficients
depend only on the Gram matrix `G Gᵀ` of the task gradients; they implement
`gram_weights(gram, losses, labelled, training)`. Others override
`combine(grads, losses, training, cross_replica_sum, activations)`. A method
that solves for its weights only on some steps implements `reuse_plan` and
`reuse`, so that params mode skips the per-task gradients on the others.

A task with no label in the batch (its labelled count is 0) has loss 0 and
gradient 0; `labelled` (a boolean vector from the counts, never from the
losses' values) tells methods which tasks to combine in that step.
"""

import math

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting

MODES = ("params", "representation")
GRADIENT_DTYPES = ("float32", "bfloat16")


class GradientWeighting(Weighting):
    """Base class of methods that combine per-task gradients.

    Args:
        mode: `"params"` (exact gradients of the shared variables) or
            `"representation"` (gradients at the shared representation).
            Each method lists the modes it supports in `supported_modes`.
        gradient_dtype: The dtype the params mode holds the `T` per-task
            gradients in: `"float32"` (exact) or `"bfloat16"` (half the
            memory, `T·P·2` bytes for `P` shared parameters; the Gram matrix
            and the combination are computed in float32 from the rounded
            gradients, so the update is exact up to bfloat16 rounding of
            each task's gradient).
        **kwargs: Base layer arguments.
    """

    level = "gradient"
    #: Modes this method supports; subclasses narrow it and say why.
    supported_modes = MODES

    def __init__(self, mode="params", gradient_dtype="float32", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.supported_modes:
            raise ValueError(
                f"Invalid value received for argument `mode`. {type(self).__name__} "
                f"supports {self.supported_modes}. Received: mode={mode!r}"
            )
        if gradient_dtype not in GRADIENT_DTYPES:
            raise ValueError(
                "Invalid value received for argument `gradient_dtype`. Expected one "
                f"of {GRADIENT_DTYPES}. Received: gradient_dtype={gradient_dtype!r}"
            )
        self.mode = mode
        self.gradient_dtype = gradient_dtype

    def build(self, losses_shape):
        super().build(losses_shape)
        # The weights of the last training step: evaluate() reports
        # Σ w_i L_i with them, and they are saved with the model.
        self.task_weights = self.add_weight(
            name="task_weights",
            shape=(len(self.task_names),),
            initializer="ones",
            trainable=False,
        )

    def combine(
        self, grads, losses, counts=None, training=True, cross_replica_sum=None, activations=None
    ):
        """Combines per-task gradients.

        Args:
            grads: `(T, ...)` tensor of per-task gradients (see the module
                docstring for the two modes' shapes).
            losses: `{task: scalar}` per-task losses of the step (global
                values under `tf.distribute`).
            counts: `{task: scalar}` numbers of labelled examples (pixels)
                of the step; `None`: every task labelled.
            training: Whether this is a training step (state may update).
            cross_replica_sum: Under `tf.distribute` in representation mode,
                a function summing a tensor over replicas: each replica holds
                the gradients of its own examples, so batch-level quantities
                (the Gram matrix, sums over the batch) must be summed across
                replicas before they decide the weights. `None` otherwise
                (in params mode the gradients are already global).
            activations: In representation mode, the shared representation
                `z` itself, `(batch, *z.shape[1:])` (GradDrop weighs the
                gradients' signs by its signs); `None` in params mode.

        Returns:
            `(combined, weights)`: the combined gradient, shaped like one
            task's gradient `grads[0]`, and the `(T,)` task weights.
        """
        flat = ops.reshape(grads, (len(self.task_names), -1))
        gram = ops.matmul(flat, ops.transpose(flat))
        if cross_replica_sum is not None:
            gram = cross_replica_sum(gram)
        weights = self._weights(gram, losses, counts, training)
        return ops.tensordot(ops.cast(weights, grads.dtype), grads, axes=1), weights

    def combine_parts(self, parts, losses, counts=None, training=True, after=None):
        """`combine` in params mode, without the `(T, P)` matrix.

        Args:
            parts: Per task, its gradient as a list of tensors (one per
                shared variable, in `gradient_dtype`): `parts[t][k]`.
            losses: As in `combine`.
            counts: As in `combine`.
            training: As in `combine`.
            after: A backend's `after(value, fn)`: `fn()` computed only once
                `value` is (the training step passes one); `None`: `fn()`.

        Returns:
            `(combined, weights)`: the combined gradient as a list like
            `parts[0]` (float32) and the `(T,)` task weights.

        The Gram matrix is summed piece by piece (a variable, or a slice of
        at most `BLOCK_SIZE` of its entries), and each piece's combination is
        formed on its own, so that nothing but the per-task gradients is
        held at once, and a `(T, piece)` float32 block at a time (the memory
        the params mode needs): `after` keeps a graph executor from building
        every block at once. A method that overrides `combine` gets the
        stacked matrix.
        """
        if type(self).combine is not GradientWeighting.combine:
            shapes = [p.shape for p in parts[0]]
            flat = ops.stack([_flatten(p) for p in parts])
            combined, weights = self.combine(flat, losses, counts, training=training)
            return _split(combined, shapes), weights
        after = after or (lambda value, fn: fn())
        spans = [_spans(tensor) for tensor in parts[0]]  # per variable

        def add_block(gram, k, span):
            block = _block(parts, k, span)
            return gram + ops.matmul(block, ops.transpose(block))

        gram = ops.zeros((len(parts), len(parts)), "float32")
        for k, variable_spans in enumerate(spans):
            for span in variable_spans:
                gram = after(gram, lambda: add_block(gram, k, span))  # noqa: B023 (called at once)
        weights = self._weights(gram, losses, counts, training)
        combined, previous = [], weights
        for k, variable_spans in enumerate(spans):
            pieces = []
            for span in variable_spans:
                previous = after(previous, lambda: ops.tensordot(
                    weights, _block(parts, k, span), axes=1))  # noqa: B023
                pieces.append(previous)
            vector = pieces[0] if len(pieces) == 1 else ops.concatenate(pieces)
            combined.append(ops.reshape(vector, parts[0][k].shape))
        return combined, weights

    def _weights(self, gram, losses, counts, training):
        weights = self.gram_weights(gram, self.stack(losses), self.labelled(counts), training)
        weights = ops.cast(ops.stop_gradient(weights), "float32")
        if training:
            self.task_weights.assign(weights)
        return weights

    def reuse_plan(self, losses, counts=None):
        """Whether this training step needs the per-task gradients.

        For methods that solve for their weights only on some steps (e.g.
        Nash-MTL's `update_every`): in params mode the train step then skips
        the per-task gradients on the other steps and back-propagates the
        stored combination once.

        Args:
            losses: `{task: scalar}` per-task losses of the step (global).
            counts: `{task: scalar}` labelled examples of the step.

        Returns:
            `None` (the default: every step combines per-task gradients), or
            `(solve, weights)`: a scalar boolean tensor, True on steps that
            call `combine`, and the `(T,)` weights the other steps use, which
            then call `reuse`.
        """
        return None

    def reuse(self, combined, weights):
        """A training step that used `weights` from `reuse_plan`.

        Args:
            combined: The combined gradient `Σ_i w_i g_i` (global): a
                tensor, or a list of tensors (one per shared variable).
            weights: The `(T,)` weights of `reuse_plan`.

        Returns:
            `(combined, weights)`, as `combine` returns them; records the
            weights (subclasses also advance their own step state).
        """
        self.task_weights.assign(weights)
        return combined, weights

    def gram_weights(self, gram, losses, labelled, training):
        """Weights `(T,)` of the combination `Σ_i w_i g_i`, from `G Gᵀ`.

        Args:
            gram: `(T, T)` Gram matrix of the task gradients.
            losses: `(T,)` task losses.
            labelled: `(T,)` booleans, False for tasks without labels in
                the batch (their gradient is 0).
            training: Whether this is a training step.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `gram_weights` or `combine`."
        )

    def call(self, losses, counts=None, training=False):
        # Outside training steps (evaluate), the loss is reported with the
        # weights of the last training step.
        return self.weighted_sum(losses, self.task_weights)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "gradient_dtype": self.gradient_dtype}


#: The most entries of one variable that `combine_parts` stacks for the T
#: tasks at once (the largest ResNet50 kernel has 2.4M): a float32 block
#: is then 4T MiB (T * 2^20 * 4 bytes), not T times the largest variable (smaller
#: slices add graph ops, which cost resident memory, and saved no tensors).
BLOCK_SIZE = 2**20


def _spans(tensor):
    """`(start, stop)` slices of at most `BLOCK_SIZE` of `tensor`'s entries
    (flattened) that cover it: one for all but the largest variables."""
    size = math.prod(tensor.shape)
    return [(start, min(start + BLOCK_SIZE, size)) for start in range(0, size, BLOCK_SIZE)]


def _block(parts, k, span):
    """The `(T, stop - start)` float32 block of variable `k`'s task
    gradients, stacked in their own dtype and cast once."""
    start, stop = span
    rows = [ops.reshape(p[k], (-1,)) for p in parts]
    if (start, stop) != (0, rows[0].shape[0]):
        rows = [row[start:stop] for row in rows]
    return ops.cast(ops.stack(rows), "float32")


def _flatten(tensors):
    return ops.concatenate([ops.reshape(t, (-1,)) for t in tensors], axis=0)


def _split(vector, shapes):
    parts, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        parts.append(ops.reshape(vector[start:start + size], shape))
        start += size
    return parts
