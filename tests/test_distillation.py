"""Tests for `keras_mtl.distillation` (Hinton et al. 2015)."""

import json
import math

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl.distillation import Distiller
from keras_mtl.distillation import distillation_loss
from keras_mtl.tasks import BinaryClassification
from keras_mtl.tasks import MulticlassClassification
from keras_mtl.tasks import Regression
from keras_mtl.tasks import Segmentation
from keras_mtl.tuning import small_cnn

IMAGE = (32, 32, 3)
SIZE = Regression("size")
SHAPE = MulticlassClassification("shape", num_classes=3)


def model(tasks, name):
    trunk = small_cnn(IMAGE, filters=(8, 16, 16), name=f"{name}_trunk")
    return keras_mtl.build_model(trunk, tasks, head_units=(8,), name=name)


def student():
    return model([SIZE, SHAPE], "student")


def teachers():
    return {"size": model([SIZE], "size_teacher"), "shape": model([SHAPE], "shape_teacher")}


def copy_of(mtl_model):
    copy = keras_mtl.MultiTaskModel.from_config(mtl_model.get_config())
    copy.set_weights(mtl_model.get_weights())
    return copy


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, *IMAGE)).astype("float32")
    y = {
        "size": rng.normal(size=(n, 1)).astype("float32"),
        "shape": rng.integers(0, 3, n).astype("int32"),
    }
    return x, y


def numpy_kl(p_teacher, p_student, temperature):
    """T² · KL(softmax(log p_t / T) ‖ softmax(log p_s / T)), last axis."""
    def soften(p):
        q = np.power(p, 1.0 / temperature)
        return q / q.sum(-1, keepdims=True)

    q_t, q_s = soften(p_teacher), soften(p_student)
    return temperature**2 * np.sum(q_t * np.log(q_t / q_s), axis=-1)


def np_(x):
    return keras.ops.convert_to_numpy(x)


# --- the distillation terms by hand ------------------------------------------------
def test_two_class_kl_by_hand():
    p_t = np.array([[0.8, 0.2], [0.3, 0.7]], "float32")
    p_s = np.array([[0.6, 0.4], [0.5, 0.5]], "float32")
    task = MulticlassClassification("c", num_classes=2)
    # T = 2: q = sqrt(p) / sum(sqrt(p)), times T² = 4.
    got = np_(distillation_loss(task, p_t, p_s, temperature=2.0))
    np.testing.assert_allclose(got, numpy_kl(p_t, p_s, 2.0), rtol=1e-5)
    q_t = np.sqrt(0.8) / (np.sqrt(0.8) + np.sqrt(0.2))
    q_s = np.sqrt(0.6) / (np.sqrt(0.6) + np.sqrt(0.4))
    by_hand = 4 * (q_t * np.log(q_t / q_s) + (1 - q_t) * np.log((1 - q_t) / (1 - q_s)))
    assert got[0] == pytest.approx(by_hand, rel=1e-5)
    # T = 1 is the plain KL divergence.
    plain = np.sum(p_t * np.log(p_t / p_s), -1)
    np.testing.assert_allclose(np_(distillation_loss(task, p_t, p_s, 1.0)), plain, rtol=1e-5)
    # A sigmoid head is the same two-class distribution (P(1) in column 1).
    binary = np_(distillation_loss(BinaryClassification("b"), p_t[:, 1:], p_s[:, 1:], 2.0))
    np.testing.assert_allclose(binary, got, rtol=1e-5)


def test_multilabel_segmentation_and_regression_terms():
    rng = np.random.default_rng(1)
    # Multi-label: the Bernoulli term averaged over labels.
    p_t, p_s = rng.uniform(0.05, 0.95, (2, 3, 4)).astype("float32")
    task = keras_mtl.tasks.MultilabelClassification("m", num_labels=4)
    two_class = lambda p: np.stack([1 - p, p], -1)  # noqa: E731
    expected = numpy_kl(two_class(p_t), two_class(p_s), 3.0).mean(-1)
    np.testing.assert_allclose(np_(distillation_loss(task, p_t, p_s, 3.0)), expected, rtol=1e-4)
    # Segmentation: one KL per pixel.
    logits = rng.normal(size=(2, 2, 4, 4, 3))
    p_t, p_s = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    got = np_(distillation_loss(Segmentation("s", num_classes=3), p_t, p_s, 2.0))
    assert got.shape == (2, 4, 4)
    np.testing.assert_allclose(got, numpy_kl(p_t, p_s, 2.0), rtol=1e-4)
    # Regression: squared error to the teacher, whatever the temperature.
    t, s = rng.normal(size=(2, 3, 2)).astype("float32")
    for temperature in (1.0, 5.0):
        got = np_(distillation_loss(Regression("r", units=2), t, s, temperature))
        np.testing.assert_allclose(got, ((s - t) ** 2).mean(-1), rtol=1e-5)


# --- the Distiller's losses ----------------------------------------------------------
def test_alpha_one_is_the_students_own_training():
    alone = student()
    distilled = copy_of(alone)
    distiller = Distiller(distilled, teachers(), alpha=1.0)
    alone.compile(optimizer=keras.optimizers.SGD(0.01))
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    x, y = data()
    h_alone = alone.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    h_dist = distiller.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    for key in ["loss", "size_loss", "shape_loss", "size_mae", "shape_accuracy"]:
        np.testing.assert_allclose(h_dist[key], h_alone[key], rtol=1e-5, err_msg=key)
    assert h_dist["shape_distill_loss"][0] > 0  # computed, weighted 0
    for a, b in zip(alone.get_weights(), distilled.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_alpha_zero_with_the_student_as_its_own_teacher_is_zero():
    net = student()
    twin = copy_of(net)  # a multi-task teacher: each task picks its own output
    distiller = Distiller(net, {"size": twin, "shape": twin}, alpha=0.0)
    distiller.compile()
    x, y = data(8)
    distill = distiller.distillation_losses(x, distiller(x))
    assert np_(distill["size"]) == pytest.approx(0.0, abs=1e-7)
    assert np_(distill["shape"]) == pytest.approx(0.0, abs=1e-7)
    assert np_(distiller.compute_loss(x, y, distiller(x))) == pytest.approx(0.0, abs=1e-7)


def test_losses_by_hand_with_missing_labels():
    distiller = Distiller(student(), teachers(), temperature=2.0, alpha=0.25)
    distiller.compile(loss_weights={"size": 2.0, "shape": 1.0})
    x, y = data(8)
    y["shape"][:] = -1  # no shape label in this batch
    y["size"][:3] = np.nan  # 5 size labels of 8
    pred = {k: np_(v) for k, v in distiller(x).items()}
    targets = {k: np_(v) for k, v in distiller.teacher_predictions(x).items()}
    size_label = np.mean((pred["size"][3:] - y["size"][3:]) ** 2)
    size_distill = np.mean((pred["size"] - targets["size"]) ** 2)  # all 8 examples
    shape_distill = np.mean(numpy_kl(targets["shape"], pred["shape"], 2.0))

    losses, label, distill, counts = distiller.task_losses(x, y, distiller(x))
    assert np_(label["shape"]) == 0.0 and np_(counts["shape"]) == 0.0
    assert np_(label["size"]) == pytest.approx(size_label, rel=1e-5)
    assert np_(distill["size"]) == pytest.approx(size_distill, rel=1e-5)
    assert np_(distill["shape"]) == pytest.approx(shape_distill, rel=1e-4)
    assert np_(losses["shape"]) == pytest.approx(0.75 * shape_distill, rel=1e-4)
    expected = 2.0 * (0.25 * size_label + 0.75 * size_distill) + 0.75 * shape_distill
    assert np_(distiller.compute_loss(x, y, distiller(x))) == pytest.approx(expected, rel=1e-4)

    logs = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert math.isnan(logs["shape_loss"])  # no label: no label loss (NaN, not a perfect 0)
    assert logs["shape_distill_loss"] == pytest.approx(shape_distill, rel=1e-4)
    assert logs["size_loss"] == pytest.approx(size_label, rel=1e-5)


def test_task_without_teacher_keeps_its_label_loss():
    distiller = Distiller(student(), {"shape": teachers()["shape"]}, alpha=0.5)
    distiller.compile()
    x, y = data(8)
    losses, label, distill, _ = distiller.task_losses(x, y, distiller(x))
    assert sorted(distill) == ["shape"]
    assert np_(losses["size"]) == np_(label["size"])


# --- training ------------------------------------------------------------------------------
def test_fit_decreases_the_loss_and_logs_every_term():
    distiller = Distiller(student(), teachers(), temperature=2.0, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3), weighting="uncertainty")
    x, y = data(32)
    history = distiller.fit(x, y, batch_size=16, epochs=6, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert {"size_loss", "size_distill_loss", "shape_loss", "shape_distill_loss",
            "size_mae", "shape_accuracy", "weight_size", "weight_shape"} <= set(history)
    # The teachers did not move.
    assert all(not t.trainable for t in distiller.teachers.values())
    assert not any(v.trainable for t in distiller.teachers.values() for v in t.variables)


def test_student_learns_towards_the_teacher_without_labels():
    distiller = Distiller(student(), teachers(), temperature=1.0, alpha=0.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, _ = data(32)
    unlabelled = {"size": np.full((32, 1), np.nan, "float32"), "shape": np.full(32, -1, "int32")}

    def gap():
        pred, target = distiller(x), distiller.teacher_predictions(x)
        return {k: float(np.mean(np.abs(np_(pred[k]) - np_(target[k])))) for k in pred}

    before = gap()
    history = distiller.fit(x, unlabelled, batch_size=16, epochs=8, verbose=0).history
    after = gap()
    for name in ("size", "shape"):
        assert after[name] < 0.5 * before[name], (name, before, after)
        assert history[f"{name}_distill_loss"][-1] < history[f"{name}_distill_loss"][0]
        assert all(math.isnan(v) for v in history[f"{name}_loss"])  # never labelled


def test_out_of_domain_label_stops_fit_naming_the_task():
    distiller = Distiller(student(), teachers())
    distiller.compile()
    x, y = data(16)
    y["shape"][5] = 7  # shape has 3 classes
    with pytest.raises(ValueError, match=r"shape.*7"):
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)


# --- saving ----------------------------------------------------------------------------------
def test_round_trip_through_keras_file(tmp_path):
    distiller = Distiller(student(), teachers(), temperature=3.0, alpha=0.3)
    distiller.compile(optimizer="adam", weighting=keras_mtl.weighting.Uncertainty())
    x, y = data(16)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)

    assert isinstance(loaded, Distiller)
    assert json.dumps(loaded.get_config()) == json.dumps(distiller.get_config())
    # Only the student (and its weighting) trains; the teachers stay frozen.
    assert len(loaded.trainable_variables) == len(distiller.trainable_variables)
    assert (loaded.temperature, loaded.alpha) == (3.0, 0.3)
    for key, value in distiller(x).items():
        np.testing.assert_allclose(np_(loaded(x)[key]), np_(value), rtol=1e-5, atol=1e-6)
    for key, value in distiller.teacher_predictions(x).items():
        np.testing.assert_allclose(np_(loaded.teacher_predictions(x)[key]), np_(value), rtol=1e-5)
    np.testing.assert_allclose(
        np_(loaded.student.weighting.log_variances), np_(distiller.student.weighting.log_variances)
    )
    before = distiller.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    for key, value in before.items():
        assert after[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)  # training resumes

    # The student alone is what one ships.
    student_path = str(tmp_path / "student.keras")
    distiller.student.save(student_path)
    shipped = keras.models.load_model(student_path, safe_mode=True)
    np.testing.assert_allclose(
        np_(shipped(x)["shape"]), np_(distiller(x)["shape"]), rtol=1e-5, atol=1e-6
    )


# --- bad inputs --------------------------------------------------------------------------------
def test_gradient_level_weighting_is_refused_at_compile():
    distiller = Distiller(student(), teachers())
    match = r"argument `weighting`.*loss-level weightings only.*PCGrad"
    with pytest.raises(ValueError, match=match):
        distiller.compile(weighting="pcgrad")


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"teachers": {"colour": None}},
            r"argument `teachers`.*task names \['size', 'shape'\].*\['colour'\]",
        ),
        ({"teachers": {}}, r"argument `teachers`. Expected a non-empty dict"),
        ({"teachers": "shape"}, r"Received: teachers='shape'"),
        (
            {"temperature": 0.0},
            r"argument `temperature`. Expected a float > 0. Received: temperature=0.0",
        ),
        ({"temperature": -1}, r"Received: temperature=-1"),
        ({"alpha": 1.5}, r"argument `alpha`. Expected a float in \[0, 1\]. Received: alpha=1.5"),
        ({"alpha": -0.1}, r"Received: alpha=-0.1"),
        ({"student": "student"}, r"argument `student`. Expected a `keras_mtl.MultiTaskModel`"),
    ],
)
def test_bad_arguments(change, match):
    kwargs = {"student": student(), "teachers": {"shape": teachers()["shape"]}, **change}
    with pytest.raises(ValueError, match=match):
        Distiller(**kwargs)


def test_teacher_output_must_match_the_head():
    wrong = model([MulticlassClassification("shape", num_classes=4)], "wrong_teacher")
    with pytest.raises(ValueError, match=r"teacher of task 'shape' must output the shape of the "
                                         r"student's head \(None, 3\). Received .* \(None, 4\)"):
        Distiller(student(), {"shape": wrong})
    other = model([SIZE, BinaryClassification("big")], "other_teacher")
    with pytest.raises(ValueError, match=r"teacher of task 'shape'.*keys \['big', 'size'\]"):
        Distiller(student(), {"shape": other})
