"""Per-task gradients and the gradient-level train step on the JAX backend.

The twin of `keras_mtl.gradients` (TensorFlow), for Keras' JAX trainer, whose
`train_step(state, data)` is a pure function of the variables' values:

1. the trunk runs once under `jax.vjp`, which returns `z` and the function
   that back-propagates an output gradient at `z` through the trunk;
2. per-task gradients come from one `jax.jacrev` of the loss vector
   `(L_1, …, L_T)` -- vectorised over the tasks, no Python loop per task:
   - `"representation"` mode: w.r.t. `z` (through the heads only),
     `(T, batch, ...)`; the combined gradient then goes back through the
     trunk with the vjp of step 1 (one backward pass);
   - `"params"` mode: w.r.t. the trunk's variables (through heads and trunk),
     flattened into `(T, P)`, combined into the trunk's gradient;
3. the same Jacobian gives the heads' gradients (each head only affects its
   own task's loss, so summing its rows over tasks gives d(Σ L_t)/d head_t);
4. the optimizer applies them statelessly, and the weighting's state, the
   trunk's non-trainable updates (batch-norm statistics, dropout seeds) and
   the metrics come back as new values.

The weighting's `combine` is the same `keras.ops` code as on TensorFlow, run
in a `keras.StatelessScope` so that its state updates are returned as values.
Distribution (`keras.distribution`) is not supported on this path yet:
`MultiTaskModel.compile` refuses it.

`representation_gradients` is the JAX side of
`keras_mtl.gradients.representation_gradients` (the diagnostic behind
`keras_mtl.callbacks.GradientConflict`), which dispatches to it.
"""

import jax
import jax.numpy as jnp
import keras


def _scope(pairs):
    return keras.StatelessScope(state_mapping=list(pairs))


def _current(scope, refs, values):
    """The values of `refs` after a scope ran (unchanged ones as given)."""
    out = []
    for ref, value in zip(refs, values):
        new = scope.get_current_value(ref)
        out.append(value if new is None else new)
    return out


def _masked_means(sums, counts, names):
    """`(losses, counts)` as `(T,)` vectors: each task's summed loss over its
    labelled examples divided by their count (0 for a task without any)."""
    counts = jnp.stack([counts[n] for n in names])
    losses = jnp.stack([sums[n] for n in names])
    return jnp.where(counts > 0, losses / jnp.maximum(counts, 1e-12), 0.0), counts


def train_step(model, state, data):
    """One training step with a gradient-level weighting (see module doc)."""
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weighting, names = model.weighting, model.task_names
    trainable_refs, non_trainable_refs = model.trainable_variables, model.non_trainable_variables
    position = {id(v): i for i, v in enumerate(trainable_refs)}
    trunk_at = [position[id(v)] for v in model.trunk.trainable_variables]
    head_at = [position[id(v)] for n in names for v in model.heads[n].trainable_variables]

    def with_values(trunk_values, head_values):
        values = list(trainable)
        for i, value in zip(trunk_at + head_at, list(trunk_values) + list(head_values)):
            values[i] = value
        return values

    def representation(trunk_values):
        values = with_values(trunk_values, [trainable[i] for i in head_at])
        pairs = list(zip(trainable_refs, values)) + list(zip(non_trainable_refs, non_trainable))
        with keras.StatelessScope(state_mapping=pairs, collect_losses=True) as scope:
            z = model.representation(x, training=True)
        # Losses the trunk's layers add with `add_loss` (e.g. a soft-sharing
        # penalty) join unweighted; weight regularisers are handled below.
        added = sum((model._aggregate_additional_loss(l) for l in scope.losses), jnp.zeros(()))
        return (z, added), _current(scope, non_trainable_refs, non_trainable)

    def task_losses(z, head_values, after_trunk):
        values = with_values([trainable[i] for i in trunk_at], head_values)
        pairs = list(zip(trainable_refs, values)) + list(zip(non_trainable_refs, after_trunk))
        with _scope(pairs) as scope:
            y_pred = {n: model.heads[n](model.head_input(z, n), training=True) for n in names}
            sums, counts = model.task_loss_terms(y, y_pred, sample_weight)
        losses, counts = _masked_means(sums, counts, names)
        updated = _current(scope, non_trainable_refs, after_trunk)
        return losses, (losses, counts, y_pred, updated)

    trunk_values = [trainable[i] for i in trunk_at]
    head_values = [trainable[i] for i in head_at]
    if weighting.mode == "representation":
        (z, added), back_through_trunk, after_trunk = jax.vjp(
            representation, trunk_values, has_aux=True
        )
        (grads, head_jacobian), aux = jax.jacrev(task_losses, argnums=(0, 1), has_aux=True)(
            z, head_values, after_trunk
        )
    else:
        def all_losses(trunk_values, head_values):
            (z, added), after_trunk = representation(trunk_values)
            losses, aux = task_losses(z, head_values, after_trunk)
            # The added loss is one more row of the Jacobian.
            return jnp.concatenate([losses, added[None]]), (aux, added)

        (trunk_jacobian, head_jacobian), (aux, added) = jax.jacrev(
            all_losses, argnums=(0, 1), has_aux=True
        )(trunk_values, head_values)
        num_tasks = len(names)
        added_grads = [j[num_tasks] for j in trunk_jacobian]
        grads = jnp.concatenate(
            [j[:num_tasks].reshape(num_tasks, -1) for j in trunk_jacobian], axis=1
        )
        z = None
    losses, counts, y_pred, after_step = aux
    losses, grads = jax.lax.stop_gradient(losses), jax.lax.stop_gradient(grads)

    loss_dict = weighting.unstack(losses)
    pairs = list(zip(trainable_refs, trainable)) + list(zip(non_trainable_refs, after_step))
    with _scope(pairs) as scope:
        if z is None:
            combined, weights = weighting.combine(grads, loss_dict, training=True)
        else:
            combined, weights = weighting.combine(grads, loss_dict, training=True, activations=z)
    new_non_trainable = _current(scope, non_trainable_refs, after_step)

    if z is None:
        trunk_grads, offset = [], 0
        for value, extra in zip(trunk_values, added_grads):
            trunk_grads.append(combined[offset:offset + value.size].reshape(value.shape) + extra)
            offset += value.size
    else:
        (trunk_grads,) = back_through_trunk((combined, jnp.ones((), combined.dtype)))
    head_grads = [j.sum(axis=0) for j in head_jacobian]
    all_grads = [jnp.zeros_like(v) for v in trainable]
    for i, g in zip(trunk_at + head_at, list(trunk_grads) + head_grads):
        all_grads[i] = g
    if model.losses:
        # Regularisation losses join unweighted, as on TensorFlow.
        def extra_loss(values):
            with _scope(zip(trainable_refs, values)):
                return sum(model._aggregate_additional_loss(l) for l in model.losses)

        extra_grads = jax.grad(extra_loss)(list(trainable))
        all_grads = [g + e for g, e in zip(all_grads, extra_grads)]
    new_trainable, new_optimizer = model.optimizer.stateless_apply(
        optimizer_values, all_grads, trainable
    )

    with _scope(zip(model.metrics_variables, metrics_values)) as scope:
        total = jnp.sum(weights * losses) + added
        model._loss_tracker.update_state(total, sample_weight=keras.tree.flatten(x)[0].shape[0])
        model.track_losses(loss_dict, weighting.unstack(weights), weighting.unstack(counts))
        logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    new_metrics = _current(scope, model.metrics_variables, metrics_values)
    return logs, (new_trainable, new_non_trainable, new_optimizer, new_metrics)


def representation_gradients(model, x, y, sample_weight=None):
    """Per-task gradients at `z` in inference mode: `(grads, losses, counts)`
    as in `keras_mtl.gradients.representation_gradients`.

    Nothing is updated (inference mode), so the heads read the variables'
    current values inside `jax.jacrev` without a stateless scope.
    """
    names = model.task_names
    z = model.representation(x, training=False)

    def task_losses(z):
        y_pred = {n: model.heads[n](z, training=False) for n in names}
        losses, counts = _masked_means(*model.task_loss_terms(y, y_pred, sample_weight), names)
        return losses, (losses, counts)

    grads, (losses, counts) = jax.jacrev(task_losses, has_aux=True)(z)
    return grads, dict(zip(names, losses)), dict(zip(names, counts))
