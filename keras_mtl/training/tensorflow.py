"""The TensorFlow primitives of the training step: tapes and all-reduce.

`Engine` is what `keras_mtl.training.step` asks of a backend: gradients of a
function (`value_and_grad`), a forward pass kept for several backward passes
(`vjp`), a conditional with state (`cond`), the sum over the replicas of a
`tf.distribute` strategy, and the optimizer update. Under
`MirroredStrategy` the step runs once per replica (Keras' trainer calls it in
the replica context); the optimizer sums the replicas' gradients, as in
Keras' own step.
"""

import tensorflow as tf

from keras_mtl import _keras_compat



def _gradient(tape, targets, sources, output_gradients=None):
    # Zeros for unconnected sources, made here: TF's own
    # `unconnected_gradients=ZERO` reads the dtype of a `keras.Variable`
    # source as a string and fails.
    grads = tape.gradient(targets, sources, output_gradients=output_gradients)
    return [_dense(g, s) for g, s in zip(grads, sources)]


def _dense(grad, source):
    if grad is None:
        return tf.zeros_like(source)
    if isinstance(grad, tf.IndexedSlices):
        # An embedding's gradient: its rows for the ids the batch read.
        # Per-task gradients are compared and combined entry by entry, so
        # each is made dense.
        grad = tf.convert_to_tensor(grad)
    if not grad.shape.is_fully_defined():
        # Some gradients lose the static shape of their variable (a Dense
        # layer's kernel on a 3-d input, through `tensordot`, when the batch
        # size is unknown); the params mode slices them by it.
        grad = tf.ensure_shape(grad, source.shape)
    return grad


class Engine:
    """TensorFlow's side of one training or test step."""

    def __init__(self):
        self.replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self._context = tf.distribute.get_replica_context()

    def cross_replica_sum(self, value):
        """`value` summed over the replicas (the value itself on one)."""
        if self.replicas == 1:
            return value
        return self._context.all_reduce(tf.distribute.ReduceOp.SUM, value)

    def first_example(self, batch):
        """The index in the global batch of this replica's first example
        (`batch`: this replica's batch size); 0 on one replica. The strategy
        hands replica `r` the `r`-th contiguous part of the global batch."""
        if self.replicas == 1:
            return 0
        replica = self._context.replica_id_in_sync_group
        sizes = self.cross_replica_sum(
            tf.cast(tf.one_hot(replica, self.replicas), tf.int32) * tf.cast(batch, tf.int32))
        return tf.reduce_sum(sizes[:replica])

    def value_and_grad(self, fn, variables, tensors=()):
        """`((value, aux), (tensor_grads, variable_grads))` of `fn(*tensors)`,
        which returns `(scalar, aux)`; one backward pass. Each tensor is
        given as its own copy, so the same tensor passed twice gets the
        gradient of each use separately."""
        with tf.GradientTape() as tape:
            copies = [tf.identity(t) for t in tensors]
            tape.watch(copies)
            value, aux = fn(*copies)
        grads = _gradient(tape, value, copies + list(variables))
        return (value, aux), (grads[: len(copies)], grads[len(copies):])

    def vjp(self, fn, variables):
        """`(outputs, aux, pullback)` of `fn()`, which returns `(outputs, aux)`
        with `outputs` a list of tensors. `pullback(cotangents)` (one per
        output, `None` for zero) gives the gradients of `variables`; it may
        be called many times (one backward pass each)."""
        tape = tf.GradientTape(persistent=True)
        with tape:
            outputs, aux = fn()

        def pullback(cotangents):
            pairs = [(o, c) for o, c in zip(outputs, cotangents) if c is not None]
            return _gradient(
                tape, [o for o, _ in pairs], list(variables), [c for _, c in pairs]
            )

        return outputs, aux, pullback

    def cond(self, pred, true_fn, false_fn, variables=()):
        """`true_fn()` or `false_fn()`; both may assign `variables`."""
        return tf.cond(pred, true_fn, false_fn)

    def after(self, value, fn):
        """`fn()`, its ops run only once `value` is computed (a graph
        executor would otherwise start independent ops early, each holding
        its output until its consumer can run)."""
        with tf.control_dependencies(tf.nest.flatten(value)):
            return fn()

    def apply(self, optimizer, grads, variables):
        optimizer.apply(grads, variables)


def train_step(model, data):
    from keras_mtl.training import step

    return _keras_compat.multi_worker_logs(step.train_step(model, data, Engine()))


def test_step(model, data):
    from keras_mtl.training import step

    return _keras_compat.multi_worker_logs(step.test_step(model, data, Engine()))
