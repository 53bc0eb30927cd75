"""Schedules: which source each batch of a mixed dataset comes from, and how
long an epoch is.

- `round_robin`: exact alternation (the "movie + yelp" story of seed 003);
- `proportional`: p_i ∝ N_i (by size);
- `temperature`: p_i ∝ N_i^(1/T);
- `annealed` (Stickland & Murray, 2019, "BERT and PALs", ICML): p_i ∝ N_i^α
  with α = 1 - 0.8 (e - 1)/(E - 1) over epochs e = 1..E, from proportional
  towards uniform.

Plain NumPy: `keras_mtl.data.interleaving` turns these into `tf.data` ops.
"""

import math
import numbers

import numpy as np

from keras_mtl._validation import check_choice
from keras_mtl._validation import check_positive_int

SCHEDULES = ("round_robin", "proportional", "temperature", "annealed")
EPOCHS = ("longest", "shortest", "sum")
# Stickland & Murray (2019): the exponent falls linearly from 1 to 1 - 0.8.
ANNEALED_DECAY = 0.8



def exponent(schedule, temperature, num_epochs, epoch):
    """α in p_i ∝ N_i^α (0 is uniform, 1 proportional)."""
    if schedule == "round_robin":
        return 0.0
    if schedule == "proportional":
        return 1.0
    if schedule == "temperature":
        return 1.0 / temperature
    if num_epochs == 1:
        return 1.0
    e = min(max(int(epoch), 1), num_epochs)
    return 1.0 - ANNEALED_DECAY * (e - 1) / (num_epochs - 1)


def sampling_probabilities(
    sizes, schedule="proportional", *, temperature=None, num_epochs=None, epoch=1
):
    """The probability of drawing each source under a schedule.

    `round_robin` gives the long-run share of exact alternation (uniform).

    Args:
        sizes: Dict `{source: number of batches}` (or a list of sizes).
        schedule: One of `SCHEDULES`.
        temperature: T of the `temperature` schedule (p_i ∝ N_i^(1/T)).
        num_epochs: E of the `annealed` schedule.
        epoch: The 1-based epoch e of the `annealed` schedule (clipped to
            [1, E]).

    Returns:
        A float64 numpy array, one probability per source, in order.

    Example:

    >>> sampling_probabilities({"a": 90, "b": 10}).round(2).tolist()
    [0.9, 0.1]
    >>> sampling_probabilities({"a": 90, "b": 10}, "annealed", num_epochs=5,
    ...                        epoch=5).round(3).tolist()
    [0.608, 0.392]
    """
    schedule = check_choice("schedule", schedule, SCHEDULES)
    temperature, num_epochs = check_schedule_arguments(schedule, temperature, num_epochs)
    values = list(sizes.values()) if isinstance(sizes, dict) else list(sizes)
    for value in values:
        check_positive_int("sizes", value)
    alpha = exponent(schedule, temperature, num_epochs, epoch)
    weights = np.asarray(values, np.float64) ** alpha
    return weights / weights.sum()


def epoch_length(sizes, probabilities, epoch="longest"):
    """Batches per epoch for sources of `sizes` drawn with `probabilities`.

    - `"longest"`: until every source has been seen once (in expectation for
      the sampling schedules; shorter sources restart);
    - `"shortest"`: until the first source has been seen once;
    - `"sum"`: as many batches as all the sources hold together.

    With round-robin (uniform probabilities) over K sources these are
    K·max N_i, K·min N_i and Σ N_i; with `proportional` all three are Σ N_i.

    Example:

    >>> epoch_length([30, 10], [0.5, 0.5], "longest")
    60
    >>> epoch_length([30, 10], [0.5, 0.5], "shortest")
    20
    """
    epoch = check_choice("epoch", epoch, EPOCHS)
    sizes = [int(s) for s in (sizes.values() if isinstance(sizes, dict) else sizes)]
    if epoch == "sum":
        return sum(sizes)
    ratios = [n / p for n, p in zip(sizes, probabilities)]
    value = max(ratios) if epoch == "longest" else min(ratios)
    # N / (N / ΣN) can come out as ΣN + 1e-13: not a reason for one more step.
    return max(1, math.ceil(value * (1 - 1e-9)))


def check_schedule_arguments(schedule, temperature, num_epochs):
    if schedule == "temperature":
        ok = (
            temperature is not None
            and not isinstance(temperature, bool)
            and isinstance(temperature, numbers.Real)
            and math.isfinite(temperature)
            and temperature > 0
        )
        if not ok:
            raise ValueError(
                "Invalid value received for argument `temperature`. Expected a "
                "finite float > 0 with schedule='temperature'. Received: "
                f"temperature={temperature!r}"
            )
        temperature = float(temperature)
    elif temperature is not None:
        raise ValueError(
            "Invalid value received for argument `temperature`. It is only used "
            f"with schedule='temperature'. Received: temperature={temperature!r} "
            f"with schedule={schedule!r}"
        )
    if schedule == "annealed":
        if num_epochs is None:
            raise ValueError(
                "Invalid value received for argument `num_epochs`. schedule='annealed' "
                "needs the number of epochs E (α goes from 1 at epoch 1 to 0.2 at "
                "epoch E). Received: num_epochs=None"
            )
        num_epochs = check_positive_int("num_epochs", num_epochs)
    elif num_epochs is not None:
        raise ValueError(
            "Invalid value received for argument `num_epochs`. It is only used with "
            f"schedule='annealed'. Received: num_epochs={num_epochs!r} with "
            f"schedule={schedule!r}"
        )
    return temperature, num_epochs
