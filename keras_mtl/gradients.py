"""Per-task gradients and the gradient-level training step (TensorFlow).

This is the one backend-specific module: everything else uses `keras.ops`.
`train_step(model, data)` replaces Keras' step when the model's weighting is
a `GradientWeighting`:

1. one forward pass, recording the shared representation `z`; each head
   reads its own copy of `z`, so one backward pass of `Σ L_t` through the
   heads gives every task's gradient at `z` and the heads' own gradients;
2. per-task gradients, in the weighting's mode:
   - `"representation"`: the gradients at `z` of step 1, `(T, batch, ...)`;
   - `"params"`: exact gradients of each task loss w.r.t. the trunk's
     variables (one backward pass through the trunk per task, with that
     task's gradient at `z` as output gradient), flattened into a `(T, P)`
     matrix; on the steps where a method reuses stored weights
     (`GradientWeighting.reuse_plan`), one backward pass of their
     combination instead;
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


def _trunk_gradient(tape, targets, variables, output_gradients):
    """Flat gradient of the trunk's variables for output gradients at the
    representations `targets` (one backward pass through the trunk).

    `targets[t]` is what head t reads: the same `z` for every task, or task
    t's own `z_t` (per-task trunks).
    """
    if all(target is targets[0] for target in targets):
        return _flatten(_gradient(
            tape, targets[0], variables, output_gradients=tf.add_n(output_gradients)))
    return _flatten(_gradient(tape, targets, variables, output_gradients=output_gradients))


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
        # One copy of `z` per head: one backward pass of Σ L_t through the
        # heads then gives every task's own gradient at `z` (the gradient
        # at head t's copy is L_t's alone) together with the heads' gradients.
        copies = [tf.identity(model.head_input(z, n)) for n in names]
        y_pred = {n: model.heads[n](c, training=True) for n, c in zip(names, copies)}
        sums, counts = model.task_loss_terms(y, y_pred, sample_weight)
        counts = tf.stack([counts[n] for n in names])
        if cross_replica_sum is not None:
            counts = cross_replica_sum(counts)
        losses = {n: tf.math.divide_no_nan(sums[n], counts[i]) for i, n in enumerate(names)}
        total_loss = ops.sum(ops.stack([losses[n] for n in names]))
        extra = sum((model._aggregate_additional_loss(l) for l in model.losses), tf.zeros(()))
        extra = extra / replicas

    # Each head sees only its own loss, so d(Σ L_t)/d(head_t) is head t's
    # own task gradient.
    grads = _gradient(tape, total_loss, copies + head_variables)
    rep_grads, head_grads = grads[: len(names)], grads[len(names) :]

    global_losses = losses
    if cross_replica_sum is not None:
        vector = cross_replica_sum(tf.stack([losses[n] for n in names]))
        global_losses = {n: vector[i] for i, n in enumerate(names)}
    if weighting.mode == "representation":
        combined, weights = weighting.combine(
            tf.stack(rep_grads), global_losses, training=True,
            cross_replica_sum=cross_replica_sum, activations=z,
        )
        trunk_grads = _gradient(tape, z, trunk_variables, output_gradients=combined)
    else:
        targets = [model.head_input(z, n) for n in names]
        combined, weights = _params_combine(
            tape, targets, trunk_variables, rep_grads, weighting, global_losses, cross_replica_sum
        )
        # The optimizer sums gradients over replicas; this one is global.
        trunk_grads = _unflatten(combined / replicas, trunk_variables)
    if model.losses:
        # Regularisation losses join unweighted.
        extra_grads = _gradient(tape, extra, trunk_variables + head_variables)
        trunk_grads = [g + e for g, e in zip(trunk_grads, extra_grads)]
        head_grads = [g + e for g, e in zip(head_grads, extra_grads[len(trunk_variables) :])]
    del tape

    # In the model's own variable order: the optimizer builds its slots in
    # the order of its first call, and a loaded model rebuilds them in
    # `model.trainable_variables` order (every one is in the trunk or a
    # head: `MultiTaskModel.compile` checks it).
    pairs = zip(trunk_variables + head_variables, trunk_grads + head_grads)
    by_variable = {id(v): g for v, g in pairs}
    model.optimizer.apply_gradients([(by_variable[id(v)], v) for v in model.trainable_variables])
    total = ops.sum(weights * weighting.stack(global_losses)) + extra * replicas
    batch_size = tf.shape(copies[0])[0]
    model._loss_tracker.update_state(total, sample_weight=batch_size)
    model.track_losses(global_losses, weighting.unstack(weights), weighting.unstack(counts))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _params_combine(tape, targets, variables, rep_grads, weighting, losses, cross_replica_sum):
    """Params mode: `(combined, weights)`, the combined (global) gradient of
    the trunk's variables, flat, and the task weights.

    Task t's exact gradient is one backward pass through the trunk with its
    gradient at `z` as the output gradient. A method that solves for its
    weights only on some steps (`reuse_plan`, e.g. Nash-MTL's
    `update_every`) skips them on the others: one backward pass of the
    stored combination `Σ w_t ∂L_t/∂z` gives `Σ w_t g_t` directly. The
    cross-replica sum stays outside the two `tf.cond`s (a collective inside
    a branch cannot synchronise the replicas).
    """
    plan = weighting.reuse_plan(losses)
    if plan is None:
        grads = tf.stack([
            _trunk_gradient(tape, [target], variables, [g])
            for target, g in zip(targets, rep_grads)
        ])
        if cross_replica_sum is not None:
            grads = cross_replica_sum(grads)
        return weighting.combine(grads, losses, training=True)

    solve, stored = plan
    num_tasks, size = len(weighting.task_names), sum(int(v.shape.num_elements()) for v in variables)
    # One backward pass outside the conds: task 0's gradient on solving
    # steps, the stored combination on the others. (Inside a `tf.cond`
    # branch TensorFlow's oneDNN rewrites do not reach the convolutions,
    # whose gradients then take ~1.6 times as long on CPU.)
    first = _trunk_gradient(tape, targets, variables, [
        tf.where(solve, g if t == 0 else tf.zeros_like(g), stored[t] * g)
        for t, g in enumerate(rep_grads)
    ])

    def all_tasks():
        others = [
            _trunk_gradient(tape, [target], variables, [g])
            for target, g in zip(targets[1:], rep_grads[1:])
        ]
        return tf.stack([first] + others)

    # `(T, P)` on solving steps, `(1, P)` (the combination) on the others.
    grads = tf.cond(solve, all_tasks, lambda: first[None])
    if cross_replica_sum is not None:
        grads = cross_replica_sum(grads)
    return tf.cond(
        solve,
        lambda: weighting.combine(tf.ensure_shape(grads, (num_tasks, size)), losses, training=True),
        lambda: weighting.reuse(tf.ensure_shape(grads, (1, size))[0], stored),
    )


def representation_gradients(model, x, y, sample_weight=None):
    """Per-task gradients of the task losses w.r.t. `z` for one batch.

    The diagnostic view of the representation mode (inference mode: no
    update of batch-norm statistics, no dropout, no weight change): one
    forward pass through the trunk, then one backward pass per task through
    its head only (on JAX, one `jax.jacrev` over the tasks). Used by
    `keras_mtl.callbacks.GradientConflict`.

    Args:
        model: A compiled `MultiTaskModel`.
        x: A batch of inputs.
        y: `{task: labels}` for the batch (missing labels masked as in
            training).
        sample_weight: Optional sample weights, as in `fit`.

    Returns:
        `(grads, losses, counts)`: a `(T, batch, *z.shape[1:])` tensor in
        `model.task_names` order, and `{task: scalar}` dicts of the task
        losses and of their numbers of labelled examples (pixels).
    """
    names = model.task_names
    if not model.shares_representation:
        raise ValueError(
            "Gradients at the shared representation need a model whose heads "
            "read one shared `z`; this model's trunk gives each task its own "
            f"representation ({sorted(model.trunk.output)})."
        )
    if keras.backend.backend() == "jax":
        from keras_mtl import gradients_jax  # jax is optional

        return gradients_jax.representation_gradients(model, x, y, sample_weight)
    z = model.representation(x, training=False)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        y_pred = {n: model.heads[n](z, training=False) for n in names}
        sums, counts = model.task_loss_terms(y, y_pred, sample_weight)
        losses = {n: tf.math.divide_no_nan(sums[n], counts[n]) for n in names}
    grads = task_gradients(tape, losses, names, z, "representation")
    del tape
    return grads, losses, counts
