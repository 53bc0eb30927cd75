"""Adversarial tasks: a gradient reversal layer between the trunk and a head.

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
ICML 2015 (arXiv:1409.7495); used for multi-task learning by Liu, Qiu &
Huang, "Adversarial Multi-task Learning for Text Classification", ACL 2017.

Some tasks are there to be *forgotten* by the shared representation: which
data set (domain) an example came from, a protected attribute, a nuisance
factor. The gradient reversal layer `R_λ` is the identity in the forward
pass and multiplies the gradient by `-λ` in the backward pass (paper,
eq. 13-14). Put between the shared representation `z` and such a task's
head, it makes one backward pass do two things: the head learns to predict
the task from `z` (its own gradient is untouched), while the trunk receives
`-λ` times that task's gradient and so moves `z` to make the head's job
harder. The result is a representation from which the task is hard to
predict: the min-max game of the paper, with plain `fit`.

`keras_mtl.tasks.Task(..., gradient_reversal=λ)` builds the head with this
layer in front. The paper raises `λ` from 0 to 1 during training
(`λ_p = 2 / (1 + exp(-10 p)) - 1`, `p` the fraction of training done); `λ`
is a non-trainable variable of the layer, so a callback can set it between
steps without retracing (see `GradientReversal`).
"""

import keras
from keras import ops

from keras_mtl._validation import check_non_negative


@keras.saving.register_keras_serializable(package="keras_mtl")
class GradientReversal(keras.layers.Layer):
    """Identity forward, gradient times `-scale` backward (Ganin & Lempitsky 2015).

    Args:
        scale: `λ >= 0`, the factor of the reversed gradient; 0 stops the
            gradient (the head then trains on a fixed representation).
        **kwargs: Base layer arguments (`name`, ...).

    Attributes:
        scale: The current `λ`, a non-trainable variable (saved with the
            model): `layer.scale.assign(0.5)` changes it, e.g. from a
            `keras.callbacks.LambdaCallback` following the paper's schedule.

    Example:

    >>> import keras
    >>> layer = GradientReversal(scale=0.5)
    >>> x = keras.ops.convert_to_tensor([[1.0, -2.0]])
    >>> keras.ops.convert_to_numpy(layer(x)).tolist()  # identity forward
    [[1.0, -2.0]]
    >>> float(keras.ops.convert_to_numpy(layer.scale))
    0.5
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_scale = check_non_negative("scale", scale)
        self.scale = self.add_weight(
            name="scale",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_scale),
            trainable=False,
        )

    def call(self, inputs):
        # Read outside the custom-gradient function: TensorFlow refuses
        # variables read inside one.
        factor = ops.negative(ops.cast(self.scale, inputs.dtype))

        @ops.custom_gradient
        def reverse(x):
            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return ops.multiply(upstream, factor)

            return ops.copy(x), grad

        return reverse(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.initial_scale}
