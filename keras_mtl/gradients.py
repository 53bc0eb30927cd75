"""Per-task gradients and the gradient-level training step (TensorFlow).

This is the one backend-specific module: everything else uses `keras.ops`.
`train_step(model, data)` replaces Keras' step when the model's weighting is
a `GradientWeighting`:

1. one forward pass, recording the shared representation `z`;
2. per-task gradients, in the weighting's mode:
   - `"params"`: exact gradients of each task loss w.r.t. the trunk's
     variables (one backward pass per task on a persistent tape), flattened
     into a `(T, P)` matrix;
   - `"representation"`: gradients w.r.t. `z` (backward passes through the
     heads only), `(T, batch, ...)`;
3. the weighting combines them into one gradient for the shared part; in
   representation mode it is back-propagated once through the trunk;
4. heads get their own task's gradient (plus regularisation losses), and the
   optimizer applies everything in one `apply_gradients`.
"""

import keras
import tensorflow as tf
from keras import ops

_ZERO = tf.UnconnectedGradients.ZERO


def _gradient(tape, target, sources, **kwargs):
    """`tape.gradient` with zeros, not None, for unconnected sources."""
    if not isinstance(sources, (list, tuple)):
        return tape.gradient(target, sources, unconnected_gradients=_ZERO, **kwargs)
    grads = tape.gradient(target, sources, **kwargs)
    return [tf.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(grads, sources)]


def _flatten(tensors):
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def _unflatten(vector, like):
    parts, start = [], 0
    for variable in like:
        size = int(variable.shape.num_elements())
        parts.append(tf.reshape(vector[start : start + size], variable.shape))
        start += size
    return parts


def num_replicas():
    """Replicas of the current `tf.distribute` strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def task_gradients(tape, losses, names, sources, mode):
    """Stacked per-task gradients: `(T, P)` (params) or `(T, *z.shape)`."""
    if mode == "representation":
        return tf.stack([_gradient(tape, losses[n], sources) for n in names])
    return tf.stack([_flatten(_gradient(tape, losses[n], sources)) for n in names])


def train_step(model, data):
    """One training step with a gradient-level weighting (see module doc).

    Under `tf.distribute` the step is exact: each replica's task loss is its
    share of the global masked mean (its summed losses over the global label
    count), per-task gradients are summed over replicas before they are
    combined (params mode) or the batch-level statistics are (representation
    mode), so N replicas give the update of one replica on the global batch.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weighting = model.weighting
    names = model.task_names
    replicas = num_replicas()
    context = tf.distribute.get_replica_context()
    cross_replica_sum = None
    if replicas > 1:
        def cross_replica_sum(value):
            return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

    trunk_variables = model.trunk.trainable_variables
    head_variables = [v for n in names for v in model.heads[n].trainable_variables]

    with tf.GradientTape(persistent=True) as tape:
        z = model.representation(x, training=True)
        y_pred = {n: model.heads[n](z, training=True) for n in names}
        sums, counts = model.task_loss_terms(y, y_pred, sample_weight)
        counts = tf.stack([counts[n] for n in names])
        if cross_replica_sum is not None:
            counts = cross_replica_sum(counts)
        losses = {n: tf.math.divide_no_nan(sums[n], counts[i]) for i, n in enumerate(names)}
        extra = sum((model._aggregate_additional_loss(l) for l in model.losses), tf.zeros(()))
        extra = extra / replicas
        # Each head sees only its own loss, so d(Σ L_t)/d(head_t) is head
        # t's own task gradient; regularisation losses join unweighted.
        heads_objective = ops.sum(ops.stack([losses[n] for n in names])) + extra

    global_losses = losses
    if cross_replica_sum is not None:
        vector = cross_replica_sum(tf.stack([losses[n] for n in names]))
        global_losses = {n: vector[i] for i, n in enumerate(names)}
    if weighting.mode == "representation":
        grads = task_gradients(tape, losses, names, z, "representation")
        combined, weights = weighting.combine(
            grads, global_losses, training=True, cross_replica_sum=cross_replica_sum
        )
        trunk_grads = _gradient(tape, z, trunk_variables, output_gradients=combined)
    else:
        grads = task_gradients(tape, losses, names, trunk_variables, "params")
        if cross_replica_sum is not None:
            grads = cross_replica_sum(grads)
        combined, weights = weighting.combine(grads, global_losses, training=True)
        # The optimizer sums gradients over replicas; this one is global.
        trunk_grads = _unflatten(combined / replicas, trunk_variables)
    head_grads = _gradient(tape, heads_objective, head_variables)
    if model.losses:
        extra_trunk = _gradient(tape, extra, trunk_variables)
        trunk_grads = [g + e for g, e in zip(trunk_grads, extra_trunk)]
    del tape

    model.optimizer.apply_gradients(zip(trunk_grads + head_grads, trunk_variables + head_variables))
    total = ops.sum(weights * weighting.stack(global_losses)) + extra * replicas
    batch_size = tf.shape(z)[0]
    model._loss_tracker.update_state(total, sample_weight=batch_size)
    model.track_losses(global_losses, weighting.unstack(weights), weighting.unstack(counts))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
