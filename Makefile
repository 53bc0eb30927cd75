# `make test` and `make demo` work from a fresh clone: they create .venv and
# install the package with its `dev` extra, pinned to the newest tested
# releases (constraints/newest.txt). `make test-oldest` runs the core suite
# against the oldest supported ones (constraints/oldest.txt) in .venv-oldest;
# `make check-wheel` builds the wheel and sdist, checks their metadata,
# installs the wheel into a fresh venv and runs the README's ten lines there;
# `make docs` builds the API reference site (mkdocs.yml) into site/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

# The backend-agnostic core on JAX. JAX_TESTS run in `make test`; the longer
# JAX_MORE (the JAX gradient step checked against TensorFlow's, the model,
# data, branch points, adversarial heads, callbacks, architectures,
# optimizers, distillation, the bad-input catalogue) and kill-and-resume in
# `make test-slow`.
JAX_TESTS := tests/test_weighting_common.py tests/test_weighting_static.py \
	tests/test_weighting_inverse_size.py tests/test_weighting_uncertainty.py \
	tests/test_weighting_dwa.py tests/test_weighting_rlw.py tests/test_weighting_gls.py \
	tests/test_weighting_famo.py tests/test_weighting_scale_invariant.py tests/test_tasks.py \
	tests/test_metrics.py tests/test_backbones.py
JAX_MORE := tests/test_gradients_jax.py tests/test_model.py tests/test_data.py \
	tests/test_weighting_stch.py tests/test_weighting_imtl_l.py \
	tests/test_branching.py tests/test_adversarial.py \
	tests/test_callbacks.py tests/test_optimizers.py tests/test_distillation.py \
	tests/test_architectures_mmoe.py tests/test_architectures_ple.py \
	tests/test_architectures_cross_stitch.py tests/test_architectures_mtan.py \
	tests/test_architectures_task_norm.py tests/test_architectures_soft_sharing.py \
	tests/test_negative_losses.py tests/test_custom_weighting.py tests/test_keras_compat.py \
	tests/test_nonfinite.py tests/test_compile.py tests/test_bad_inputs.py \
	tests/test_mixed_precision.py tests/test_several_inputs.py tests/test_backbones_molecules.py \
	tests/test_architectures_dselect_k.py
# Slow on JAX too: kill-and-resume, the gradient samples' traced fit, and
# weighting files marked slow as a whole (to keep `make test` under 10
# minutes). FairGrad's file is not here:
# 6 of its tests fail on JAX (a tf.function check, and scale checks whose
# float64 solve runs in float32 there without jax_enable_x64); its JAX step
# is checked against TensorFlow's in test_gradients_jax.py.
JAX_SLOW := tests/test_kill_resume.py tests/test_weighting_db_mtl.py \
	tests/test_weighting_excess_mtl.py tests/test_weighting_moco.py \
	tests/test_weighting_sdmgrad.py tests/test_weighting_modo.py tests/test_gradient_samples.py

# The fast TensorFlow suite runs in two pytest-xdist processes (one per core
# here; much of a test is single-threaded tracing), a test file per process
# so module fixtures are built once, each TensorFlow with one thread per pool
# (two processes of two threads each oversubscribe 2 cores). `make test
# WORKERS=` runs it in one process. The slow TensorFlow suite too: most of it
# is child processes, one at a time per worker.
WORKERS ?= -n 2 --dist loadfile
XDIST_ENV := $(if $(WORKERS),TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1)

OLDEST := .venv-oldest
# keras-hub without its dependencies: they include tensorflow-text, which
# would install `tensorflow` beside `tensorflow-cpu`. It imports these two.
HUB := --no-deps keras-hub
HUB_IMPORTS := regex tokenizers

.PHONY: install test test-slow test-oldest check-wheel docs demo bench clean

$(VENV)/.installed: pyproject.toml constraints/newest.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints/newest.txt
	$(BIN)/python -m pip install --quiet $(HUB) -c constraints/newest.txt
	$(BIN)/python -m pip install --quiet $(HUB_IMPORTS) -c constraints/newest.txt
	touch $@

install: $(VENV)/.installed

$(OLDEST)/.installed: pyproject.toml constraints/oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet -e ".[dev]" -c constraints/oldest.txt
	$(OLDEST)/bin/python -m pip install --quiet $(HUB) -c constraints/oldest.txt
	$(OLDEST)/bin/python -m pip install --quiet $(HUB_IMPORTS) -c constraints/oldest.txt
	touch $@

test: install
	$(XDIST_ENV) $(BIN)/python -m pytest keras_mtl tests -m "not slow" $(WORKERS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m "not slow" $(JAX_TESTS)

test-slow: install
	$(XDIST_ENV) $(BIN)/python -m pytest tests -m slow $(WORKERS) || [ $$? -eq 5 ]  # 5: none collected
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m "not slow" $(JAX_MORE)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m slow $(JAX_SLOW)

test-oldest: $(OLDEST)/.installed
	$(XDIST_ENV) $(OLDEST)/bin/python -m pytest -q keras_mtl tests -m "not slow" $(WORKERS)
	KERAS_BACKEND=jax $(OLDEST)/bin/python -m pytest -q -m "not slow" $(JAX_TESTS)

check-wheel: install
	$(BIN)/python tools/check_wheel.py

# The API reference site (mkdocs.yml) into site/, offline; a warning is an error.
docs: install
	$(BIN)/python -m mkdocs build --strict

demo: install
	$(BIN)/keras-mtl demo

bench: install
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_weighting_overhead.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_gradient_overhead.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_quality.py  # digit pairs 25 min, shapes about 2 hours on 2 cores (measured)

clean:
	rm -rf $(VENV) $(OLDEST) runs build dist site *.egg-info
