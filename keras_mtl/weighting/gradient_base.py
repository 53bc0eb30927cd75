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
`gram_weights(gram, losses, labelled, training)`. Those whose weights do not
change when every gradient is multiplied by the same number (PCGrad, CAGrad,
IMTL, ...) set `scale_free_weights` and get the Gram matrix of the gradients
divided by their largest entry, which float32 holds for gradients of any
size: `G Gᵀ` itself overflows for entries of ~1e19 and underflows (to 0, or
to a few denormal bits) below ~1e-19. Others override
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
    #: Whether the weights of `gram_weights` stay the same when every task
    #: gradient is multiplied by the same `s > 0`. Then `combine` and
    #: `combine_parts` hand it the Gram matrix of the gradients divided by
    #: their largest entry, so that for any finite float32 gradients the
    #: results are finite and `s` times those of `s = 1`. False (the default,
    #: for methods whose weights depend on the gradients' size, such as
    #: `w_i = 1 / ‖g_i‖`): `gram_weights` gets `G Gᵀ` itself.
    scale_free_weights = False
    #: For methods whose weights depend on each gradient's size in a way
    #: they can undo (Nash-MTL: scaling task `i`'s gradient by `s_i` divides
    #: its weight by `s_i`): each task's gradient is divided by its own
    #: largest entry, and `gram_weights` gets the Gram matrix of those and the
    #: `(T,)` divisors as the keyword argument `scale`, and returns weights
    #: for the undivided gradients. Gradients of any sizes, even 1e30 apart,
    #: then give a Gram matrix float32 holds.
    scale_aware_weights = False
    #: Independent gradient samples the method combines per step: 1, or
    #: more for the double-sampling methods (SDMGrad and MoDo take 3), which
    #: implement `combine_samples`. In params mode the training step then
    #: splits each batch into that many interleaved sub-batches (example `i`
    #: in sub-batch `i mod S`) and hands the method every task's gradient on
    #: each: one forward pass of the batch, `S T` backward passes through
    #: the trunk (`keras_mtl.training.step`). The heads are trained on the
    #: whole batch's loss. LibMTL draws `S` batches of `batch_size` per step
    #: instead: `batch_size=S B` here sees the data its `B` sees. `combine`
    #: and `combine_parts` give the method the same gradients as every
    #: sample (the deterministic case).
    gradient_samples = 1

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
        if self.gradient_samples > 1:
            parts = [[g] for g in ops.unstack(ops.convert_to_tensor(grads))]
            combined, weights = self.combine_parts(parts, losses, counts, training)
            return combined[0], weights
        flat = ops.reshape(grads, (len(self.task_names), -1))
        scale = None
        if self.scale_free_weights or self.scale_aware_weights:
            # Under tf.distribute each replica holds part of the batch and
            # the Gram matrix is summed over replicas, so every replica must
            # divide by the same number: the sum of the replicas' largest
            # entries (at most N times the largest; any common scale will do,
            # and a sum is the one reduction at hand).
            if self.scale_aware_weights:  # one per task
                largest = ops.max(ops.abs(flat), axis=1)
            else:
                largest = _largest_magnitude([flat])
            if cross_replica_sum is not None:
                largest = cross_replica_sum(largest)
            scale = _usable(largest)
            flat = flat / (scale[:, None] if self.scale_aware_weights else scale)
        gram = ops.matmul(flat, ops.transpose(flat))
        if cross_replica_sum is not None:
            gram = cross_replica_sum(gram)
        weights = self._weights(gram, losses, counts, training, scale)
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
        every block at once. A method that overrides `combine`, and not
        this, gets the stacked matrix.
        """
        if self.gradient_samples > 1:
            return self.combine_samples(
                [parts] * self.gradient_samples, losses, counts, training, after)
        overridden = type(self).combine is not GradientWeighting.combine
        if overridden and type(self).combine_parts is GradientWeighting.combine_parts:
            shapes = [p.shape for p in parts[0]]
            flat = ops.stack([_flatten(p) for p in parts])
            combined, weights = self.combine(flat, losses, counts, training=training)
            return _split(combined, shapes), weights
        scale = divisor = None  # the parts are global: no reduction over replicas
        if self.scale_aware_weights:
            scale = ops.stack([_usable(_largest_magnitude(task)) for task in parts])
            divisor = scale[:, None]
        elif self.scale_free_weights:
            scale = divisor = _usable(_largest_magnitude([p for task in parts for p in task]))
        gram = parts_gram(parts, parts, divisor, after)
        weights = self._weights(gram, losses, counts, training, scale)
        return parts_combination(weights, parts, after), weights

    def combine_samples(self, samples, losses, counts=None, training=True, after=None):
        """Combines `gradient_samples` independent samples of the per-task
        gradients (params mode; methods with `gradient_samples > 1`).

        Args:
            samples: Per sample, per task, its gradient as a list of tensors
                (one per shared variable): `samples[s][t][k]`, as the
                `parts` of `combine_parts`.
            losses: As in `combine` (the whole batch's).
            counts: As in `combine` (the whole batch's).
            training: As in `combine`.
            after: As in `combine_parts`.

        Returns:
            `(combined, weights)` as `combine_parts` returns them.
        """
        raise NotImplementedError(
            f"{type(self).__name__} sets `gradient_samples = {self.gradient_samples}` and must "
            "implement `combine_samples`."
        )

    def _weights(self, gram, losses, counts, training, scale=None):
        arguments = (gram, self.stack(losses), self.labelled(counts), training)
        if self.scale_aware_weights:
            if scale is None:
                scale = ops.ones((len(self.task_names),))
            weights = self.gram_weights(*arguments, scale=scale)
        else:
            weights = self.gram_weights(*arguments)
        weights = ops.cast(ops.stop_gradient(weights), "float32")
        if training:
            self.task_weights.assign(weights)
        return weights

    def build_shared(self, variables, representation_shape=None):
        """What the method combines gradients of, before `build`.

        `MultiTaskModel.compile` calls it (at every compile, before `build`
        where the method is not built yet), so that methods whose state is
        shaped by the shared part create it in `build`: per group of
        variables (GradVac's `grouping`), or per shared parameter (ExcessMTL's
        accumulators). By default nothing.

        Args:
            variables: The trunk's trainable variables, in the order of the
                per-task gradients' parts in params mode.
            representation_shape: The shape of one example's shared `z`
                (`None` where it varies; representation mode), or None for
                trunks with per-task representations.
        """

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
            gram: `(T, T)` Gram matrix of the task gradients; divided by a
                common positive scale when `scale_free_weights` is True.
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


def shared_parameter_count(method, variables, recorded=None):
    """The number of entries of `variables` (the trunk's trainable ones), for
    the `build_shared` of methods that keep state per shared parameter; a
    clear error when there are none, or when it differs from `recorded` (the
    count `method`'s state was built for)."""
    size = int(sum(math.prod(tuple(v.shape)) for v in variables))
    name = type(method).__name__
    if size == 0:
        raise ValueError(
            f"{name} keeps state per shared (trunk) parameter, and the trunk has no "
            "trainable variables yet. Build the trunk (call it on an input) before "
            "`compile`, or make some of its variables trainable."
        )
    if recorded is not None and size != recorded:
        raise ValueError(
            f"This {name} holds state for {recorded} shared parameters; this trunk has "
            f"{size} trainable ones (another model, or layers frozen or unfrozen since). "
            "Compile with a new instance."
        )
    return size


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


def parts_gram(parts, others, divisor=None, after=None):
    """The `(T, T)` float32 matrix of inner products `<parts[i], others[j]>`
    of per-task gradients given as per-variable lists (`parts[t][k]`; the
    Gram matrix when `others` is `parts`), summed a `(T, piece)` block at a
    time (`GradientWeighting.combine_parts`), each block divided by
    `divisor` (a scalar, or `(T, 1)`: one per row) first."""
    after = after or (lambda value, fn: fn())

    def add_block(gram, k, span):
        block = _block(parts, k, span)
        other = None if others is parts else _block(others, k, span)
        if divisor is not None:
            block = block / divisor
            other = None if other is None else other / divisor
        return gram + ops.matmul(block, ops.transpose(block if other is None else other))

    gram = ops.zeros((len(parts), len(others)), "float32")
    for k, tensor in enumerate(parts[0]):
        for span in _spans(tensor):
            gram = after(gram, lambda: add_block(gram, k, span))  # noqa: B023 (called at once)
    return gram


def parts_combination(weights, parts, after=None):
    """`Σ_t weights[t] parts[t]` as a list like `parts[0]` (float32), formed
    a `(T, piece)` block at a time, each after the previous (`after`)."""
    after = after or (lambda value, fn: fn())
    combined, previous = [], weights
    for k, tensor in enumerate(parts[0]):
        pieces = []
        for span in _spans(tensor):
            previous = after(previous, lambda: ops.tensordot(
                weights, _block(parts, k, span), axes=1))  # noqa: B023 (called at once)
            pieces.append(previous)
        vector = pieces[0] if len(pieces) == 1 else ops.concatenate(pieces)
        combined.append(ops.reshape(vector, tensor.shape))
    return combined


def sample_scale(samples):
    """A common positive divisor of gradient samples (`samples[s][t][k]`):
    their largest `|entry|`, or 1 where that is 0 or not finite. Inner
    products of the divided gradients stay in float32's range for gradients
    of any finite size."""
    return _usable(_largest_magnitude([p for sample in samples for task in sample for p in task]))


def _largest_magnitude(tensors):
    """The largest `|x|` over the entries of `tensors` (float32 scalar), by
    two reductions each (no `abs` copy of a variable's gradients)."""
    return ops.max(ops.stack([
        ops.cast(ops.maximum(ops.max(t), -ops.min(t)), "float32") for t in tensors
    ]))


def _usable(scale):
    """`scale`, or 1 where it is 0 (all gradients zero: nothing to scale) or
    not finite (a non-finite gradient: the methods then see the Gram matrix
    they always saw, and the step is non-finite anyway)."""
    return ops.where(ops.logical_and(ops.isfinite(scale), ops.greater(scale, 0.0)), scale, 1.0)


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
