"""Tests for `keras_mtl.weighting.SmoothTchebycheff` (STCH, Lin et al. 2024)."""

import math

import keras
import numpy as np
import pytest

import conftest
from keras_mtl import tasks as T
from keras_mtl import weighting as W

from test_weighting_common import built
from test_weighting_common import call
from test_weighting_common import data
from test_weighting_common import fit
from test_weighting_common import needs_tf
from test_weighting_common import tf_gradients
from test_weighting_common import tiny_model

ABC = ["a", "b", "c"]
NO_B = {"a": 4.0, "b": 0.0, "c": 4.0}
LN2 = math.log(2.0)


def _epoch(weighting, steps, epoch):
    """One epoch of training steps: each a losses dict (every task
    labelled) or a `(losses, counts)` pair; returns the steps' results."""
    weighting.on_epoch_begin(epoch)
    results = []
    for step in steps:
        losses, counts = step if isinstance(step, tuple) else (step, None)
        results.append(call(weighting, losses, training=True, counts=counts))
    weighting.on_epoch_end(epoch)
    return results


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def with_nadir(mu=1.0, min_losses=None):
    """STCH after its warm-up, nadir (2, 2, 4): the nadir epoch's two steps
    average to it."""
    weighting = built(W.SmoothTchebycheff(mu=mu, warmup_epochs=0, min_losses=min_losses), ABC)
    shift = {k: (min_losses or {}).get(k, 0.0) for k in ABC}
    steps = [{"a": 2.0, "b": 1.0, "c": 4.0}, {"a": 2.0, "b": 3.0, "c": 4.0}]
    _epoch(weighting, [{k: v + shift[k] for k, v in s.items()} for s in steps], 0)
    np.testing.assert_allclose(_numpy(weighting.nadir), [2.0, 2.0, 4.0], rtol=1e-6)
    return weighting


def libmtl_loss(losses, nadir, mu):
    """LibMTL/weighting/STCH.py, lines 48-52 (lines 45-49 of the authors'
    STCH_MTL/LibMTL/weighting/STCH.py, the same code), in float64: the value
    it backpropagates, whose largest term is detached."""
    z = np.log(losses / nadir + 1e-20)
    largest = np.max(z)  # `torch.max(losses.data).detach()`
    return mu * np.log(np.sum(np.exp((z - largest) / mu))) * len(losses), largest


# --- names, defaults, config ----------------------------------------------------------
def test_names_defaults_and_libmtl_defaults():
    for name in ("stch", "STCH", "smooth_tchebycheff", "Smooth-Tchebycheff"):
        assert type(W.get(name)) is W.SmoothTchebycheff, name
    assert W.STCH is W.SmoothTchebycheff and W.STCH.level == "loss"
    # LibMTL/config.py: --STCH_mu 1.0, --STCH_warmup_epoch 4.
    config = W.SmoothTchebycheff().get_config()
    assert {k: config[k] for k in ("mu", "warmup_epochs", "min_losses")} == {
        "mu": 1.0, "warmup_epochs": 4, "min_losses": None}
    assert set(W.SmoothTchebycheff.search_space) == {"mu"}


def test_config_round_trip_and_bad_values():
    weighting = W.SmoothTchebycheff(mu=0.25, warmup_epochs=2, min_losses={"b": -1.0})
    config = weighting.get_config()
    clone = W.SmoothTchebycheff.from_config(config)
    assert clone.get_config() == config
    assert (clone.mu, clone.warmup_epochs, clone.min_losses) == (0.25, 2, {"b": -1.0})
    for mu in (0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match=r"^Invalid value received for argument `mu`. "
                           r"Expected a float > 0. Received: mu="):
            W.SmoothTchebycheff(mu=mu)
    for epochs in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"^Invalid value received for argument "
                           r"`warmup_epochs`. Expected an integer >= 0. Received: warmup_epochs="):
            W.SmoothTchebycheff(warmup_epochs=epochs)
    with pytest.raises(ValueError, match=r"argument `min_losses`.*unknown: \['z'\]"):
        built(W.SmoothTchebycheff(min_losses={"z": -1.0}), ABC)


# --- the warm-up and the nadir ----------------------------------------------------------
def test_warmup_is_the_sum_of_logs_and_the_last_warmup_epoch_gives_the_nadir():
    weighting = built(W.SmoothTchebycheff(warmup_epochs=2), ABC)
    e = math.e
    for epoch in range(3):  # epochs 0, 1 and the nadir epoch 2: sum of logs, 1 / L
        # Epochs 0 and 1 have other losses, which the nadir must not see.
        scale = 10.0 if epoch < 2 else 1.0
        steps = [{"a": scale, "b": e * scale, "c": e**2},
                 {"a": 3 * scale, "b": e * scale, "c": e**2}]
        (t1, w1), (t2, w2) = _epoch(weighting, steps, epoch)
        assert t1 == pytest.approx(math.log(scale) + math.log(e * scale) + 2.0, rel=1e-6)
        assert w1 == pytest.approx({"a": 1 / scale, "b": 1 / (e * scale), "c": e**-2}, rel=1e-6)
        assert w2["a"] == pytest.approx(1 / (3 * scale), rel=1e-6)
        assert int(weighting.epochs_seen) == epoch + 1
        nadir = _numpy(weighting.nadir)
        if epoch < 2:
            np.testing.assert_array_equal(nadir, [1.0, 1.0, 1.0])  # not known yet
    np.testing.assert_allclose(nadir, [2.0, e, e**2], rtol=1e-6)  # epoch 2's means
    # Epoch 3: STCH. At the nadir every normalised loss is 1: p = 1/3, so the
    # weights are 1 / L_t and the total T mu log T.
    total, weights = call(weighting, {"a": 2.0, "b": e, "c": e**2}, training=True)
    assert total == pytest.approx(3 * math.log(3), rel=1e-6)
    assert weights == pytest.approx({"a": 0.5, "b": 1 / e, "c": e**-2}, rel=1e-6)
    # Only once: later epochs leave the nadir as it is.
    _epoch(weighting, [{"a": 9.0, "b": 9.0, "c": 9.0}], 3)
    np.testing.assert_allclose(_numpy(weighting.nadir), [2.0, e, e**2], rtol=1e-6)


# --- STCH by hand ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "mu, total, weights",
    [
        # L / n = (1/2, 2, 1/2): exp(log(L/n) / mu) = (1/2, 2, 1/2), sum 3,
        # p = (1/6, 2/3, 1/6), weights 3 p / L.
        (1.0, 3 * math.log(3), {"a": 0.5, "b": 0.5, "c": 0.25}),
        # mu = 1/2: (L/n)^2 = (1/4, 4, 1/4), sum 9/2, p = (1/18, 8/9, 1/18).
        (0.5, 1.5 * math.log(4.5), {"a": 1 / 6, "b": 2 / 3, "c": 1 / 12}),
    ],
)
def test_total_and_weights_by_hand(mu, total, weights):
    weighting = with_nadir(mu)
    got_total, got = call(weighting, {"a": 1.0, "b": 4.0, "c": 2.0})
    assert got_total == pytest.approx(total, rel=1e-6)
    assert got == pytest.approx(weights, rel=1e-6)


@pytest.mark.parametrize("mu", [0.3, 1.0, 3.0])
def test_the_authors_loss_plus_its_detached_term_and_its_gradient(mu):
    # Against a float64 transliteration of the authors' (= LibMTL's) code:
    # its loss lacks T * max log(L/n), which it detaches; the gradient is the
    # same, and our weights are it (central differences).
    rng = np.random.default_rng(0)
    weighting = with_nadir(mu)
    nadir = np.array([2.0, 2.0, 4.0])
    for _ in range(3):
        losses = rng.uniform(0.2, 6.0, 3)
        total, weights = call(weighting, dict(zip(ABC, losses.tolist())))
        value, largest = libmtl_loss(losses, nadir, mu)
        assert total == pytest.approx(value + 3 * largest, rel=1e-5, abs=1e-6)
        # The authors detach the largest term: it stays where it was.
        def authors(shifted):
            z = np.log(shifted / nadir + 1e-20)
            return mu * np.log(np.sum(np.exp((z - largest) / mu))) * 3

        step, gradient = 1e-6, []
        for i in range(3):
            up, down = losses.copy(), losses.copy()
            up[i] += step
            down[i] -= step
            gradient.append((authors(up) - authors(down)) / (2 * step))
        np.testing.assert_allclose([weights[k] for k in ABC], gradient, rtol=1e-5)


def test_as_mu_goes_to_zero_only_the_largest_normalised_loss_is_weighted():
    # L / n = (1/2, 2, 1/2): "b" is the worst task relative to its nadir
    # (not the largest loss: "c"'s is as large). The Tchebycheff limit: weight
    # T / L_b on "b", 0 elsewhere; total T max log(L/n) = 3 log 2.
    losses = {"a": 1.0, "b": 4.0, "c": 2.0}
    shares = []
    for mu in (1.0, 0.3, 0.1, 0.03, 0.01):
        total, weights = call(with_nadir(mu), losses)
        share = {k: weights[k] * losses[k] / 3 for k in ABC}  # p_t: softmax(log(L/n) / mu)
        assert sum(share.values()) == pytest.approx(1.0, rel=1e-6)
        shares.append(share["b"])
        assert total >= 3 * LN2 - 1e-6  # the smooth max bounds the max from above
    assert shares == sorted(shares) and shares[0] == pytest.approx(2 / 3, rel=1e-6)
    total, weights = call(with_nadir(0.01), losses)
    assert weights == pytest.approx({"a": 0.0, "b": 3 / 4.0, "c": 0.0}, abs=1e-6)
    assert total == pytest.approx(3 * LN2, rel=1e-5)
    # The other end: mu -> infinity gives p = 1/T, the warm-up's 1 / L_t.
    _, weights = call(with_nadir(1e4), losses)
    assert weights == pytest.approx({"a": 1.0, "b": 0.25, "c": 0.5}, rel=1e-3)


def test_extreme_losses_and_a_tiny_mu_stay_finite():
    weighting = with_nadir(1e-4)
    total, weights = call(weighting, {"a": 1e-30, "b": 1e30, "c": 4.0})
    assert np.isfinite(total) and all(np.isfinite(list(weights.values())))
    assert weights == pytest.approx({"a": 0.0, "b": 3e-30, "c": 0.0}, rel=1e-4)


@needs_tf
def test_reported_weights_are_the_gradient():
    warmup = built(W.SmoothTchebycheff(), ABC)
    for weighting in (warmup, with_nadir(0.5)):
        steps = [({"a": 0.5, "b": 2.0, "c": 3.0}, None), ({"a": 0.5, "b": 0.0, "c": 3.0}, NO_B)]
        for losses, counts in steps:
            _, weights, grads = tf_gradients(weighting, losses, training=False, counts=counts)
            assert grads == pytest.approx(weights, rel=1e-5)
            assert np.all(np.isfinite(list(grads.values())))


# --- unlabelled tasks ------------------------------------------------------------------
def test_unlabelled_tasks_are_left_out_of_the_means_and_the_log_sum_exp():
    weighting = built(W.SmoothTchebycheff(warmup_epochs=0), ABC)
    # The nadir epoch: "b" labelled in the second step only, "c" in neither.
    no_bc = {"a": 4.0, "b": 0.0, "c": 0.0}
    (t1, w1), _ = _epoch(weighting, [
        ({"a": 1.0, "b": 0.0, "c": 0.0}, no_bc),
        ({"a": 3.0, "b": 2.0, "c": 0.0}, {"a": 4.0, "b": 4.0, "c": 0.0}),
    ], 0)
    assert t1 == pytest.approx(0.0, abs=1e-7) and w1 == {"a": 1.0, "b": 0.0, "c": 0.0}
    # Means over the labelled steps; "c", never labelled, gets the nadir 1.
    np.testing.assert_allclose(_numpy(weighting.nadir), [2.0, 2.0, 1.0], rtol=1e-6)
    # STCH without "b": T = 2 labelled tasks; log(L/n) = (log 1/2, log 4):
    # exp = (1/2, 4), sum 9/2, p = (1/9, 8/9), weights 2 p / L.
    total, weights = call(weighting, {"a": 1.0, "b": 0.0, "c": 4.0}, counts=NO_B)
    assert total == pytest.approx(2 * math.log(4.5), rel=1e-6)
    assert weights == pytest.approx({"a": 2 / 9, "b": 0.0, "c": 4 / 9}, rel=1e-6)
    none = {"a": 0.0, "b": 0.0, "c": 0.0}
    assert call(weighting, none, counts=none) == (0.0, none)


def test_evaluation_and_empty_epochs_do_not_count_and_a_new_epoch_starts_clean():
    weighting = built(W.SmoothTchebycheff(warmup_epochs=1), ABC)
    _epoch(weighting, [{"a": 1.0, "b": 1.0, "c": 1.0}], 0)
    _epoch(weighting, [], 1)  # no training step: not an epoch of the schedule
    assert int(weighting.epochs_seen) == 1
    call(weighting, {"a": 50.0, "b": 50.0, "c": 50.0}, training=True)  # an interrupted epoch
    weighting.on_epoch_begin(1)
    call(weighting, {"a": 2.0, "b": 3.0, "c": 4.0}, training=True)
    call(weighting, {"a": 100.0, "b": 100.0, "c": 100.0}, training=False)  # evaluate
    weighting.on_epoch_end(1)
    np.testing.assert_allclose(_numpy(weighting.nadir), [2.0, 3.0, 4.0], rtol=1e-6)


# --- lower bounds ----------------------------------------------------------------------
@needs_tf
def test_a_labelled_loss_at_zero_without_a_bound_is_not_finite_and_explained():
    # Presence is the count: "b" labelled with loss 0 is not left out; the
    # logarithm of 0 makes the step non-finite (the model stops with the hint),
    # in the warm-up and after it.
    for weighting in (built(W.SmoothTchebycheff(), ABC), with_nadir()):
        for b in (0.0, -0.5):
            total, _, grads = tf_gradients(weighting, {"a": 0.5, "b": b, "c": 3.0}, training=False)
            assert not (np.isfinite(total) and np.all(np.isfinite(list(grads.values())))), b
        hint = weighting.explain_nonfinite({"a": 0.5, "b": -0.5, "c": 3.0})
        assert "{'b': -0.5}" in hint and "SmoothTchebycheff(min_losses=" in hint
        assert weighting.explain_nonfinite({"a": 0.5, "b": 2.0, "c": 3.0}) is None


def test_min_losses_shift_the_losses_and_the_nadir():
    # Loss L - m in place of L everywhere: the same numbers as the unbounded
    # hand case, every loss of "b" lowered by 1 and its bound -1.
    bounded = with_nadir(1.0, min_losses={"b": -1.0})  # asserts the nadir of L - m
    total, weights = call(bounded, {"a": 1.0, "b": 3.0, "c": 2.0})
    assert total == pytest.approx(3 * math.log(3), rel=1e-6)
    assert weights == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.25}, rel=1e-6)
    warmup = built(W.SmoothTchebycheff(min_losses={"b": -1.0}), ABC)
    total, weights = call(warmup, {"a": 1.0, "b": -0.5, "c": 4.0})
    assert total == pytest.approx(math.log(0.5) + math.log(4.0), rel=1e-6)
    assert weights == pytest.approx({"a": 1.0, "b": 2.0, "c": 0.25}, rel=1e-6)
    hint = bounded.explain_nonfinite({"a": 1.0, "b": -1.0, "c": 4.0})
    assert "the mean loss of {'b': -1.0} is not above its bound {'b': -1.0}" in hint


# --- in a model ------------------------------------------------------------------------
def test_fit_then_a_keras_file_keeps_the_nadir_and_the_epoch_count(tmp_path):
    # warmup_epochs=0: epoch 0 gathers the nadir, epoch 1 is STCH. Eager, to
    # save tracing time: test_weighting_common fits it traced.
    model = tiny_model(W.SmoothTchebycheff(mu=0.5, warmup_epochs=0), run_eagerly=True)
    x, y = data()  # "b" unlabelled in the first of two batches
    history = fit(model, x, y, epochs=2).history
    assert np.all(np.isfinite(history["weight_a"] + history["weight_b"]))
    assert int(model.weighting.epochs_seen) == 2
    nadir = _numpy(model.weighting.nadir)
    # Epoch 0's mean losses, each over its labelled steps ("b": one step).
    assert np.all(nadir > 0) and not np.allclose(nadir, 1.0)
    assert nadir[0] == pytest.approx(history["a_loss"][0], rel=1e-4)
    path = str(tmp_path / "stch.keras")
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert type(restored.weighting) is W.SmoothTchebycheff
    assert restored.weighting.get_config() == model.weighting.get_config()
    for a, b in zip(model.weighting.state_arrays(), restored.weighting.state_arrays(), strict=True):
        np.testing.assert_array_equal(a, b)
    losses = {"a": 0.7, "b": 1.3}
    assert call(restored.weighting, losses) == call(model.weighting, losses)
    # A new compile starts a new schedule: no state outlives its compile.
    model.compile(optimizer="adam", weighting="stch")
    assert int(model.weighting.epochs_seen) == 0
    np.testing.assert_array_equal(_numpy(model.weighting.nadir), [1.0, 1.0])


SHAPES_EPOCHS = 3


@pytest.mark.slow  # traces a segmentation model: make test-slow runs it
def test_trains_the_shapes_hydranet_and_logs_its_weights():
    from keras_mtl.datasets import shapes

    tasks = [
        T.MulticlassClassification("shape", shapes.NUM_CLASSES),
        T.Regression("size"),
        T.Segmentation("segmentation", shapes.NUM_SEGMENTATION_CLASSES),
    ]
    names = [t.name for t in tasks]
    images, labels = next(iter(
        shapes.load("train", num_examples=32, image_size=16, tasks=names).batch(32)))
    model = conftest.tiny_model(tasks)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  weighting=W.SmoothTchebycheff(warmup_epochs=0))
    history = model.fit(images, labels, batch_size=16, epochs=SHAPES_EPOCHS, shuffle=False,
                        verbose=0).history
    for name in names:
        weights = np.asarray(history[f"weight_{name}"])
        assert weights.shape == (SHAPES_EPOCHS,) and np.all(weights > 0), (name, weights)
        assert np.all(np.isfinite(history[f"{name}_loss"]))
    # The nadir is epoch 0's mean loss of each task (every example labelled).
    nadir = _numpy(model.weighting.nadir)
    np.testing.assert_allclose(nadir, [history[f"{n}_loss"][0] for n in names], rtol=1e-4)
    assert int(model.weighting.epochs_seen) == SHAPES_EPOCHS
