"""The JAX primitives of the training step: `jax.vjp`, stateless scopes.

Keras' JAX trainer calls `train_step(state, data)` as a pure function of the
variables' values. `train_step` here maps every variable (the model's, the
optimizer's, the metrics') to its value in one `keras.StatelessScope`, runs
the same step as on TensorFlow (`keras_mtl.training.step`), and returns the
values the scope ends with. Inside, `Engine` gives that step what a tape
gives it on TensorFlow: each differentiated function runs in a nested scope
that maps the differentiated variables to `jax.vjp`'s primals and the other
variables to their current values; what it assigns (batch-norm statistics,
seed states, a weighting's state) is written back to the outer scope.
"""

import jax
import jax.numpy as jnp
import keras


class Engine:
    """JAX's side of one step, inside the stateless scope `scope` that maps
    `refs` (`None`: outside a step, variables read as they are)."""

    replicas = 1

    def __init__(self, refs=(), scope=None):
        self.refs = list(refs)
        self.scope = scope

    def cross_replica_sum(self, value):
        return value

    def first_example(self, batch):
        """As `tensorflow.Engine.first_example` (one replica: 0)."""
        return 0

    def _values(self, refs):
        if self.scope is None:
            return [v.value for v in refs]
        return [self.scope.get_current_value(v) for v in refs]

    def _pure(self, fn, variables):
        """`fn` as a function of the values of `variables`; it returns
        `(outputs, (aux, values of the other variables after the call))`."""
        ids = {id(v) for v in variables}
        others = [v for v in self.refs if id(v) not in ids]
        current = self._values(others)

        def pure(values, *tensors):
            mapping = list(zip(variables, values)) + list(zip(others, current))
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as inner:
                outputs, aux = fn(*tensors)
            return outputs, (aux, [inner.get_current_value(v) for v in others])

        return pure, others

    def _write_back(self, refs, values):
        for ref, value in zip(refs, values):
            ref.assign(value)

    def value_and_grad(self, fn, variables, tensors=()):
        """As `tensorflow.Engine.value_and_grad`."""
        variables = list(variables)
        pure, others = self._pure(fn, variables)
        (value, (aux, updated)), (variable_grads, *tensor_grads) = jax.value_and_grad(
            pure, argnums=tuple(range(len(tensors) + 1)), has_aux=True
        )(self._values(variables), *tensors)
        self._write_back(others, updated)
        return (value, aux), (list(tensor_grads), variable_grads)

    def vjp(self, fn, variables):
        """As `tensorflow.Engine.vjp`."""
        variables = list(variables)
        pure, others = self._pure(fn, variables)
        outputs, back, (aux, updated) = jax.vjp(pure, self._values(variables), has_aux=True)
        self._write_back(others, updated)

        def pullback(cotangents):
            cotangents = [
                jnp.zeros_like(o) if c is None else c for o, c in zip(outputs, cotangents)
            ]
            (grads,) = back(cotangents)
            return grads

        return outputs, aux, pullback

    def cond(self, pred, true_fn, false_fn, variables=()):
        """`true_fn()` or `false_fn()` under `jax.lax.cond`; what they assign
        to `variables` is carried out of the branch as values (a branch's
        assignments cannot leave its trace otherwise)."""
        variables = list(variables)
        current = self._values(variables)

        def branch(fn):
            def run():
                with keras.StatelessScope(state_mapping=list(zip(variables, current))) as inner:
                    outputs = fn()
                return outputs, [inner.get_current_value(v) for v in variables]

            return run

        outputs, values = jax.lax.cond(pred, branch(true_fn), branch(false_fn))
        self._write_back(variables, values)
        return outputs

    def after(self, value, fn):
        """`fn()` (XLA orders the computation itself)."""
        return fn()

    def apply(self, optimizer, grads, variables):
        """`optimizer.stateless_apply`, as Keras' JAX trainer steps: a
        `LossScaleOptimizer` (mixed_float16) chooses its update under
        `jax.lax.cond`, whose branches may only return values."""
        trainable, optimizer_values = optimizer.stateless_apply(
            self._values(optimizer.variables), grads, self._values(variables)
        )
        self._write_back(variables, trainable)
        self._write_back(optimizer.variables, optimizer_values)


def _run(model, groups, values, step):
    refs = [v for group in groups for v in group]
    flat = [v for group in values for v in group]
    # collect_losses: `model.losses` of a call made in the step itself
    # (evaluate's forward pass) are seen there.
    with keras.StatelessScope(state_mapping=list(zip(refs, flat)), collect_losses=True) as scope:
        logs = step(Engine(refs, scope))
    new = [[scope.get_current_value(v) for v in group] for group in groups]
    return logs, tuple(new)


def train_step(model, state, data):
    """Keras' JAX `train_step(state, data) -> (logs, state)`."""
    from keras_mtl.training import step

    groups = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )
    return _run(model, groups, state, lambda engine: step.train_step(model, data, engine))


def test_step(model, state, data):
    """Keras' JAX `test_step(state, data) -> (logs, state)`."""
    from keras_mtl.training import step

    groups = (model.trainable_variables, model.non_trainable_variables, model.metrics_variables)
    return _run(model, groups, state, lambda engine: step.test_step(model, data, engine))
