"""Small Gram-matrix helpers shared by the gradient-level methods.

Every method here computes its task weights from the Gram matrix `G Gᵀ` of
the task gradients. Two steps are common to all of them:

- which tasks take part in the step (`active_tasks`): a task with no label
  in the batch (`labelled` False) has a gradient of exactly 0, and so may a
  labelled task (e.g. a saturated loss); neither can be normalised, projected
  on or aligned with, so methods leave both out of the step (weight 0);
- scale (`normalized_gram`): the methods' weights do not change when every
  gradient is multiplied by the same positive number, so the Gram matrix is
  divided by its largest diagonal entry first, which makes the solvers'
  tolerances relative to the largest gradient.

Scale also decides what float32 can hold: `G Gᵀ` of raw gradients overflows
for entries of ~1e19 and underflows below ~1e-19. These methods set
`GradientWeighting.scale_free_weights`, so in a training step (`combine`,
`combine_parts`) the Gram matrix they get is already that of the gradients
divided by their largest entry: gradients of any finite float32 size give
finite weights, the same as at size 1 (tested from 1e-20 to 1e20). What is
left is relative: a gradient more than ~1e19 times smaller than the largest
has a squared norm below float32's range, so it counts as zero (left out).
"""


import keras
from keras import ops


def active_tasks(gram, labelled):
    """Boolean `(T,)`: labelled tasks whose gradient is not exactly zero."""
    return ops.logical_and(labelled, ops.greater(ops.diagonal(gram), 0.0))


def normalized_gram(gram, active):
    """`gram` with the rows and columns of inactive tasks zeroed, divided by
    its largest diagonal entry (all zeros when no task is active)."""
    mask = ops.cast(active, gram.dtype)
    gram = gram * mask[:, None] * mask[None, :]
    return ops.divide_no_nan(gram, ops.max(ops.diagonal(gram)))


def uniform_weights(active, dtype="float32"):
    """`1 / T'` for each of the `T'` active tasks, 0 for the others."""
    mask = ops.cast(active, dtype)
    return ops.divide_no_nan(mask, ops.sum(mask))


def compiled(function):
    """`function` (a pure tensor function: no variables, no collectives)
    compiled into one XLA kernel on the TensorFlow backend; unchanged on
    the others.

    The solvers here run tens of iterations of tiny `T`-sized ops; executed
    op by op, their dispatch, not their arithmetic, dominates a training
    step's overhead. Compiled, a solve costs about one op. Python arguments
    (iteration counts) are compile-time constants.
    """
    if keras.backend.backend() != "tensorflow":
        return function
    import tensorflow as tf

    return tf.function(function, jit_compile=True)


def random_task_orders(num_tasks, seed_generator, training):
    """`(T, T)` int: row `i` lists the other tasks in a random order, then `i`.

    PCGrad and GradVac visit, for each task, the other tasks in a random
    order drawn every training step (argsort of seeded uniform keys); outside
    training the order is fixed (ascending), so evaluation draws nothing.
    """
    if training:
        keys = keras.random.uniform((num_tasks, num_tasks), seed=seed_generator)
    else:
        keys = ops.tile(ops.arange(num_tasks, dtype="float32")[None, :] / num_tasks, (num_tasks, 1))
    keys = ops.where(ops.eye(num_tasks, dtype="bool"), 2.0, keys)  # the task itself last
    return ops.argsort(keys, axis=-1)


def iterate(step, start, max_iterations, tolerance):
    """Applies `step` to the vector `start` until it stops moving.

    Stops after `max_iterations` steps, or as soon as a step changes the
    vector by at most `tolerance` relative to it (L1 norms; the stopping
    rule of the official MGDA solver, whose weights sum to 1). The solvers
    here converge in a few steps on most inputs; a `tf.while_loop` that
    stops then costs far less than a fixed number of unrolled steps (each
    step is a dozen tiny ops, dominated by their dispatch).
    """
    if max_iterations == 0:
        return start

    def moving(vector, change):
        return change > tolerance * ops.sum(ops.abs(vector))

    def body(vector, change):
        new = step(vector)
        return new, ops.sum(ops.abs(new - vector))

    infinity = ops.convert_to_tensor(float("inf"), start.dtype)
    vector, _ = ops.while_loop(moving, body, (start, infinity), maximum_iterations=max_iterations)
    return vector
