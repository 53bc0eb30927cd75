"""One training step for every weighting method, on every backend.

`train_step(model, data, engine)` is the only step: the backend modules
(`tensorflow.py`, `jax.py`) supply the primitives (`engine`: gradients, a
kept forward pass, a conditional with state, the cross-replica sum, the
update) and call it from Keras' trainer.

1. The labels are prepared once (`model.prepare_targets`): per task, the
   labels, the mask of labelled examples and the sample weights.
2. Per-task losses, one normalisation everywhere: task t's loss on a replica
   is its summed weighted loss over the *global* count of labelled examples
   (the count summed over replicas), so the replicas' losses add up to the
   global masked mean and the replicas' gradients to its gradient.
3. Loss-level weighting (and `loss_weights`): one backward pass of the
   weighting's total. On several replicas the weighting sees the global
   losses `L` (the same on every replica: the same weights and state
   updates everywhere) through `L~ = stop(L) + N (l - stop(l))`, `l` the
   replica's share; `total / N` then gives each replica the share of the
   gradient of `W(L)` that makes the sum over replicas exact, for any `W`.
4. Gradient-level weighting: one forward pass through the trunk, kept
   (`engine.vjp`); one backward pass of `Σ_t L_t` through the heads, each
   head reading its own copy of `z`, gives every `∂L_t/∂z` and the heads'
   gradients; then, by the method's mode,
   - `"representation"`: the method combines the `(T, batch, ...)`
     gradients at `z` into one, back-propagated once through the trunk;
   - `"params"`: one backward pass through the trunk per task gives the
     `(T, P)` matrix of exact gradients of the shared variables, summed over
     replicas, which the method combines. A method that solves for its
     weights only on some steps (`reuse_plan`: Nash-MTL's `update_every`)
     gets, on the others, one backward pass of its stored combination.
     A method that combines independent gradient samples
     (`gradient_samples`: SDMGrad, MoDo) gets them from sub-batches of the
     batch, one backward pass per task and sub-batch (`_sample_cotangents`).
   Under `mixed_float16` (Keras wraps the optimizer in a
   `LossScaleOptimizer`) the backward passes run on the scaled loss and the
   per-task gradients are unscaled, in float32, before the method combines
   them; the combination is scaled back for the optimizer, which unscales
   it and skips a step that overflowed (`_loss_scale`).
5. The update is applied; a step that was not clean (labels or sample
   weights out of their domain, task losses, total or gradients not all
   finite) logs `loss` as NaN (`StepGuard` then stops `fit` before any
   later callback sees it; `keras_mtl.models.step_checks`).
"""

import keras
from keras import ops

from keras_mtl.models.step_checks import all_finite
from keras_mtl.models.step_checks import inputs_finite


def extra_loss(losses):
    """The sum of the regularisation / `add_loss` losses (float32)."""
    total = ops.zeros((), "float32")
    for loss in losses:
        total = total + ops.cast(ops.sum(loss), "float32")
    return total


def train_step(model, data, engine):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    targets = model.prepare_targets(y, sample_weight)
    weighting = model.weighting
    if weighting is not None and weighting.level == "gradient":
        out = _gradient_level(model, x, targets, engine)
    else:
        out = _loss_level(model, x, targets, engine)
    variables = model.trainable_variables
    grads = [out.grads.get(id(v), None) for v in variables]
    grads = [ops.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    finite = all_finite([out.total, *out.losses.values()])
    # Under a `LossScaleOptimizer` (mixed_float16) non-finite gradients are
    # expected now and then: it skips those steps and lowers the scale.
    if not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        finite = ops.logical_and(finite, all_finite(grads))
    engine.apply(model.optimizer, grads, variables)
    return _log(model, x, targets, out, finite, engine, training=True)


def test_step(model, data, engine):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    targets = model.prepare_targets(y, sample_weight)
    y_pred = model(x, training=False)
    losses, counts = _task_losses(model, targets, y_pred, engine)
    losses = {n: engine.cross_replica_sum(v) for n, v in losses.items()}
    total, weights = model.combine_losses(losses, counts, training=False)
    out = _Step(total + extra_loss(model.losses), losses, counts, weights, y_pred, None)
    return _log(model, x, targets, out, all_finite([out.total]), engine, training=False)


class _Step:
    """What a step computed: the total loss (as logged), the global task
    losses and labelled counts, the task weights, the predictions and the
    gradients (`{id(variable): gradient}`)."""

    def __init__(self, total, losses, counts, weights, y_pred, grads):
        self.total, self.losses, self.counts = total, losses, counts
        self.weights, self.y_pred, self.grads = weights, y_pred, grads


def _task_losses(model, targets, y_pred, engine):
    """Per-task `(losses, counts)`: this replica's share of each task's
    global masked mean loss, and the global labelled counts."""
    sums, counts = model.task_loss_terms(targets, y_pred)
    if engine.replicas > 1:
        names = model.task_names
        vector = engine.cross_replica_sum(ops.stack([counts[n] for n in names]))
        counts = {n: vector[i] for i, n in enumerate(names)}
    return {n: ops.divide_no_nan(sums[n], counts[n]) for n in sums}, counts


def _log(model, x, targets, out, finite, engine, training):
    """Updates the trackers, metrics and checks; the logs of the step.

    The logged loss is NaN when the step was not clean (non-finite inputs,
    out-of-domain labels or sample weights, or non-finite arithmetic): `StepGuard` reads
    only that, and `StepChecks` says what it was."""
    from keras_mtl import _keras_compat

    names = model.task_names
    clean = model.step_checks.update_state(
        ops.stack([targets[n].errors for n in names]),
        ops.isfinite(ops.stack([ops.cast(out.losses[n], "float32") for n in names])),
        finite,
        ops.stack([ops.cast(out.counts[n], "float32") for n in names]),
        # A model may impute NaN inputs itself: `stop_on_nonfinite=False`.
        inputs_finite(x) if model.stop_on_nonfinite else True,
    )
    total = ops.where(clean, ops.cast(out.total, "float32"), float("nan"))
    batch_size = ops.shape(keras.tree.flatten(x)[0])[0]
    _keras_compat.loss_tracker(model).update_state(total, sample_weight=batch_size)
    # Each replica weights the global losses by its own labelled counts: the
    # trackers' sums over replicas then give the global means.
    model.track_losses(out.losses, out.weights if training else None, out.counts)
    return model.update_metrics(targets, out.y_pred)


# --- loss level ---------------------------------------------------------------
def _loss_level(model, x, targets, engine):
    variables = model.trainable_variables

    def loss(*_):
        y_pred = model(x, training=True)
        losses, counts = _task_losses(model, targets, y_pred, engine)
        total, weights, global_losses = _combine_global(model, losses, counts, engine)
        extra = extra_loss(model.losses)
        total = total + extra / engine.replicas
        logged = total * engine.replicas if engine.replicas > 1 else total
        return model.optimizer.scale_loss(total), (logged, global_losses, counts, weights, y_pred)

    (_, (total, losses, counts, weights, y_pred)), (_, grads) = engine.value_and_grad(
        loss, variables
    )
    return _Step(total, losses, counts, weights, y_pred, _by_id(variables, grads))


def _combine_global(model, losses, counts, engine):
    """`(this replica's total, weights, global losses)` (module docstring, 3)."""
    if engine.replicas == 1:
        total, weights = model.combine_losses(losses, counts, training=True)
        return total, weights, losses
    replicas = engine.replicas
    global_losses = {n: engine.cross_replica_sum(ops.stop_gradient(v)) for n, v in losses.items()}
    surrogate = {
        n: global_losses[n] + replicas * (v - ops.stop_gradient(v)) for n, v in losses.items()
    }
    total, weights = model.combine_losses(surrogate, counts, training=True)
    return total / replicas, weights, global_losses


# --- gradient level -------------------------------------------------------------
def _gradient_level(model, x, targets, engine):
    weighting = model.weighting
    names = model.task_names
    trunk_variables = model.trunk.trainable_variables
    head_variables = [v for n in names for v in model.heads[n].trainable_variables]
    shared = model.shares_representation
    scale = _loss_scale(model)
    # The cotangent of a loss: 1, or the loss scale.
    unit = _scaled(ops.ones((), "float32"), scale)

    # 1. The trunk, once; its backward passes come later. Its outputs: `z`
    #    (or each `z_t`), then its own regularisation losses. Whether it has
    #    any is read while it runs: on JAX a layer's losses are only visible
    #    inside the scope that ran it.
    trunk_has_losses = []

    def trunk():
        z = model.representation(x, training=True)
        representations = [z] if shared else [model.head_input(z, n) for n in names]
        trunk_has_losses.append(bool(model.trunk.losses))
        return representations + [extra_loss(model.trunk.losses)], z

    outputs, z, trunk_back = engine.vjp(trunk, trunk_variables)
    regularised = trunk_has_losses[-1]
    representations = outputs[:-1]

    # 2. The heads: one backward pass of Σ_t L_t, each head on its own copy.
    def heads(*copies):
        y_pred = {n: model.heads[n](c, training=True) for n, c in zip(names, copies)}
        losses, counts = _task_losses(model, targets, y_pred, engine)
        extra = extra_loss([l for n in names for l in model.heads[n].losses])
        total = ops.sum(ops.stack([losses[n] for n in names])) + extra / engine.replicas
        return _scaled(total, scale), (losses, counts, y_pred, extra)

    inputs = [representations[0] if shared else r for r in representations]
    inputs = inputs * len(names) if shared else inputs
    (_, (losses, counts, y_pred, head_extra)), (rep_grads, head_grads) = engine.value_and_grad(
        heads, head_variables, tensors=inputs
    )
    global_losses = {n: engine.cross_replica_sum(v) for n, v in losses.items()}

    # 3. The shared part's gradient, by mode.
    if weighting.mode == "representation":
        sum_ = engine.cross_replica_sum if engine.replicas > 1 else None
        combined, weights = weighting.combine(
            _unscaled(ops.stack(rep_grads), scale), global_losses, counts, training=True,
            cross_replica_sum=sum_, activations=ops.cast(z, "float32"),
        )
        cotangent = ops.cast(_scaled(combined, scale), representations[0].dtype)
        trunk_grads = trunk_back([cotangent, unit if regularised else None])
    else:
        if weighting.gradient_samples > 1:
            rep_grads = _sample_cotangents(
                rep_grads, names, targets, counts, weighting.gradient_samples, engine)
        combined, weights = _params_combine(
            weighting, trunk_back, rep_grads, global_losses, counts, trunk_variables,
            shared, engine, scale,
        )
        # The optimizer sums gradients over replicas; this one is global.
        # (On one replica no division: it would copy P floats for nothing.)
        trunk_grads = combined
        if engine.replicas > 1 or scale is not None:
            factor = unit / engine.replicas
            trunk_grads = [g * factor for g in combined]
        if regularised:
            extra = trunk_back([None] * len(representations) + [unit])
            trunk_grads = [g + e for g, e in zip(trunk_grads, extra)]

    total = ops.sum(weights * weighting.stack(global_losses))
    total = total + engine.cross_replica_sum(outputs[-1] / engine.replicas + head_extra)
    grads = _by_id(trunk_variables, trunk_grads)
    grads.update(_by_id(head_variables, head_grads))
    return _Step(total, global_losses, counts, weighting.unstack(weights), y_pred, grads)


def _params_combine(weighting, trunk_back, rep_grads, losses, counts, variables, shared, engine,
                    scale=None):
    """Params mode: `(combined, weights)`, the combined global gradient of
    the trunk's variables (one tensor per variable) and the task weights.

    Each task's gradient stays a list of per-variable tensors (in the
    weighting's `gradient_dtype`): no flat copy, no stacked `(T, P)` matrix
    (`GradientWeighting.combine_parts`). Under loss scaling the cotangents
    `rep_grads` are scaled, and each task's gradient is unscaled before the
    method sees it."""
    num_tasks = len(weighting.task_names)
    dtype = weighting.gradient_dtype

    def task_gradient(t, cotangent):
        cotangents = [None] * (1 if shared else num_tasks) + [None]
        cotangents[0 if shared else t] = cotangent
        return [ops.cast(_unscaled(g, scale), dtype) for g in trunk_back(cotangents)]

    if weighting.gradient_samples > 1:  # rep_grads: per sample, per task
        samples = [[task_gradient(t, g) for t, g in enumerate(sample)] for sample in rep_grads]
        return weighting.combine_samples(
            engine.cross_replica_sum(samples), losses, counts, training=True, after=engine.after
        )
    plan = weighting.reuse_plan(losses, counts)
    if plan is None:
        parts = [task_gradient(t, g) for t, g in enumerate(rep_grads)]
        return weighting.combine_parts(
            engine.cross_replica_sum(parts), losses, counts, training=True, after=engine.after
        )

    solve, stored = plan
    # One backward pass outside the conditional: task 0's gradient on
    # solving steps, the stored combination `Σ_t w_t ∂L_t/∂z` on the others
    # (per-task trunks: one pass from every `z_t` at once).
    if shared:
        first = task_gradient(0, ops.where(
            solve, rep_grads[0], sum(stored[t] * g for t, g in enumerate(rep_grads))))
    else:
        first = [ops.cast(_unscaled(g, scale), dtype) for g in trunk_back([
            ops.where(solve, g if t == 0 else ops.zeros_like(g), stored[t] * g)
            for t, g in enumerate(rep_grads)
        ] + [None])]

    def all_tasks():
        return [first] + [task_gradient(t, g) for t, g in enumerate(rep_grads) if t]

    def combination_only():
        return [first] + [[ops.zeros_like(g) for g in first] for _ in range(num_tasks - 1)]

    parts = engine.cross_replica_sum(engine.cond(solve, all_tasks, combination_only))
    return engine.cond(
        solve,
        lambda: weighting.combine_parts(parts, losses, counts, training=True, after=engine.after),
        lambda: weighting.reuse([ops.cast(g, "float32") for g in parts[0]], stored),
        variables=weighting.variables,
    )


def _sample_cotangents(rep_grads, names, targets, counts, samples, engine):
    """Per sub-batch `s` and task `t`, the cotangent at `z` (or `z_t`) whose
    backward pass gives the gradient of task `t`'s mean loss over the
    sub-batch's labelled examples, for the methods that combine independent
    gradient samples (`GradientWeighting.gradient_samples`).

    Example `i` of the (global) batch is in sub-batch `i mod samples`. The batch ran
    forward once, so sub-batch `s`'s part of `∂L_t/∂z` (its rows) times
    `n_t / n_t^s` (the labelled counts of the batch and of the sub-batch,
    global under `tf.distribute`) is the gradient of its own mean loss, for
    heads that treat examples independently (with a head's batch
    normalisation the sub-batches also share its batch statistics). The
    sub-batches' gradients, weighted by `n_t^s / n_t`, add up to the
    batch's. A sub-batch without a label for a task gives it 0."""
    batch = ops.shape(rep_grads[0])[0]
    # By the example's index in the global batch: the same sub-batches on
    # any number of replicas.
    member = ops.mod(ops.arange(batch) + engine.first_example(batch), samples)
    rows = ops.cast(ops.equal(member[None, :], ops.arange(samples)[:, None]), "float32")  # (S, B)
    labelled = ops.stack([  # (T, B): labelled values (pixels) per example
        ops.sum(ops.reshape(ops.cast(targets[n].keep, "float32"), (batch, -1)), axis=1)
        for n in names
    ])
    # (T, S) labelled counts of the sub-batches, global: one reduction.
    sample_counts = engine.cross_replica_sum(ops.matmul(labelled, ops.transpose(rows)))
    factors = ops.divide_no_nan(ops.stack([counts[n] for n in names])[:, None], sample_counts)
    cotangents = [[] for _ in range(samples)]
    for t, grad in enumerate(rep_grads):
        for s in range(samples):
            scaled = ops.reshape(rows[s] * factors[t, s], (batch,) + (1,) * (len(grad.shape) - 1))
            cotangents[s].append(grad * ops.cast(scaled, grad.dtype))
    return cotangents


def _loss_scale(model):
    """The loss scale of a `LossScaleOptimizer` (Keras wraps the optimizer in
    one under the `mixed_float16` policy), or None. The gradient-level step
    scales its backward passes by it as Keras' own step does, so that small
    float16 gradients do not underflow; the methods see unscaled float32
    gradients; the optimizer unscales the update and skips a step whose
    scaled gradients overflowed (then lowering the scale)."""
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        return model.optimizer.scale_loss(ops.ones((), "float32"))
    return None


def _scaled(value, scale):
    return value if scale is None else value * ops.cast(scale, value.dtype)


def _unscaled(value, scale):
    value = ops.cast(value, "float32")
    return value if scale is None else value / scale


def _by_id(variables, grads):
    return {id(v): g for v, g in zip(variables, grads)}


def representation_gradients(model, x, y, sample_weight, engine):
    """Per-task gradients of the task losses w.r.t. `z` for one batch, in
    inference mode (nothing is updated): `(grads, losses, counts)`, a
    `(T, batch, *z.shape[1:])` tensor and `{task: scalar}` dicts. The
    diagnostic view of the representation mode
    (`keras_mtl.callbacks.GradientConflict`)."""
    names = model.task_names
    if not model.shares_representation:
        raise ValueError(
            "Gradients at the shared representation need a model whose heads "
            "read one shared `z`; this model's trunk gives each task its own "
            f"representation ({sorted(model.trunk.output)})."
        )
    targets = model.prepare_targets(y, sample_weight)
    z = model.representation(x, training=False)

    def heads(*copies):
        y_pred = {n: model.heads[n](c, training=False) for n, c in zip(names, copies)}
        sums, counts = model.task_loss_terms(targets, y_pred)
        losses = {n: ops.divide_no_nan(sums[n], counts[n]) for n in names}
        return ops.sum(ops.stack([losses[n] for n in names])), (losses, counts)

    (_, (losses, counts)), (grads, _) = engine.value_and_grad(heads, [], tensors=[z] * len(names))
    return ops.stack(grads), losses, counts
