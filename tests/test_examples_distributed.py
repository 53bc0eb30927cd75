"""`examples/distributed.py`: the same HydraNet on 1 and 2 devices, on
TensorFlow (MirroredStrategy) and JAX (DataParallel), each engine in a
process of its own."""

import keras
import pytest

from conftest import load_example

pytestmark = pytest.mark.slow  # two child processes, each training two models


def test_both_engines_give_the_one_device_update(capsys):
    example = load_example("distributed")
    results = example.main(["--examples", "32", "--batch-size", "16", "--epochs", "1",
                            "--method", "uncertainty"])
    assert set(results) == {"tensorflow", "jax"}
    assert all(0 <= d < 1e-5 for d in results.values()), results
    out = capsys.readouterr().out
    assert "tensorflow: tf.distribute.MirroredStrategy, 2 devices vs 1, uncertainty" in out
    assert "jax: keras.distribution.DataParallel, 2 devices vs 1, uncertainty" in out


def test_an_engine_other_than_this_process_backend_is_refused():
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    with pytest.raises(SystemExit, match=f"--engine {other} needs KERAS_BACKEND={other}"):
        load_example("distributed").main(["--engine", other])
