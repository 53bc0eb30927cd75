"""Random Loss Weighting (RLW): fresh random task weights at every step.

Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A
Litmus Test for Multi-Task Learning", TMLR 2022 (arXiv:2111.10603, first
titled "A Closer Look at Loss Weighting in Multi-Task Learning"). At every
training step, with the standard normal as the paper's (and LibMTL's)
default distribution:

    eps ~ N(0, I_T)        w = softmax(eps)        L = sum_t w_t * L_t

so the weights sum to 1, as in the paper. Tasks with no label in the batch
(`counts` 0) are left out: the softmax runs over the labelled tasks only and
the others get weight 0.

Outside training (`evaluate`, validation) the weights are the expectation of
the random weights, `1 / T'` for each of the `T'` labelled tasks, so
validation losses are deterministic and draw no random numbers.

The draws come from a `keras.random.SeedGenerator(seed)` whose state is
saved with the model, so a restored model continues the same stream.
"""

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.base import check_seed
from keras_mtl.weighting.registry import register


@register
class RandomLossWeighting(Weighting):
    """Weights tasks by the softmax of standard normal draws, each step.

    Args:
        seed: Optional integer seed of the weights' random stream.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = RandomLossWeighting(seed=1)
    >>> weighting.build({"a": (), "b": (), "c": ()})
    >>> counts = {"a": 8, "b": 8, "c": 0}  # "c" has no label in this batch
    >>> total, weights = weighting({"a": 1.0, "b": 2.0, "c": 0.0}, counts, training=True)
    >>> round(sum(float(w) for w in weights.values()), 6), float(weights["c"])
    (1.0, 0.0)
    """

    registry_name = "random_loss_weighting"
    aliases = ("rlw",)
    paper = "Lin et al., TMLR 2022"

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def call(self, losses, counts=None, training=False):
        present = ops.cast(self.labelled(counts), "float32")
        if training:
            noise = keras.random.normal((len(self.task_names),), seed=self.seed_generator)
            scores = ops.exp(noise - ops.max(noise)) * present
        else:
            scores = present
        weights = ops.divide_no_nan(scores, ops.sum(scores))
        return self.weighted_sum(losses, weights)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
