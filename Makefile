# Set-up and everyday jobs. Every target creates the virtual environment it needs (.venv).
#   make demo    the runtime alone (numpy, onnxruntime, OpenCV, PyAV, Pillow, trimesh: no torch, no test
#                tools), then reconstruct the bundled sample video with the bundled model
#   make test    run the test suite on the CPU, on TEST_WORKERS (2) processes (GPU/TensorRT tests skip where
#                absent); installs torch, the test and lint extras, Debian's chromium (browser tests) and
#                qemu-user (int8 on a CPU without VNNI), and .venv-triton, the Python of the real Triton
#                server the triton backend is tested on
#   make test-fast  the suite without the tests marked slow (under 2 minutes)
#   make venv    the development environment alone (torch, the test and lint extras)
#   make lint    the gates: portability (scripts/check_portable.py), ruff check, ruff format --check, mypy,
#                import-linter contracts (.importlinter)
#   make check-extras   each install extra alone in a fresh venv does its job (downloads from the index)
#   make check-aarch64  the runtime on an emulated arm64 Debian (root, minutes; docs/aarch64.md)
#   make constraints  regenerate constraints.txt from .venv (name==version only; checked by the portability gate)
#   make device-check DEVICE_OUT=DIR   the GPU check (scripts/device_check.py) with the machine's own python3
#                and torch, no venv and no network; on a machine without a CUDA GPU it says so and exits 0
#
# torch: TORCH=cpu (the default) installs the CPU build, TORCH=cuda the CUDA build (scripts/install_torch.sh):
#   make test TORCH=cuda

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
TORCH ?= cpu
TORCH_VERSION ?= 2.13.0
export TORCH TORCH_VERSION
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-dev-$(TORCH)
# pip on machines with a local wheel folder warns about every file there it skips; drop those lines only.
QUIET := { grep -v "is ignored: it is neither" || true; }

.PHONY: demo test test-fast lint check-extras check-aarch64 venv system-packages triton-server clean device-check constraints

DEVICE_OUT ?= out/device-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The runtime extra only: what a Jetson or a server that only reconstructs installs.
$(RUNTIME_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e ".[runtime]" 2>&1 | $(QUIET)
	touch $(RUNTIME_STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install_torch.sh | $(BIN)/python
	bash scripts/install_torch.sh $(BIN)/python 2>&1 | $(QUIET)
	$(PIP) install -c constraints.txt -e ".[test,lint]" 2>&1 | $(QUIET)
	$(BIN)/python -c "import torch, onnxruntime, transformers, edgescene.models"
	touch $(STAMP) $(RUNTIME_STAMP)

venv: $(STAMP)

demo: $(RUNTIME_STAMP)
	$(BIN)/edgescene reconstruct edgescene/assets/sample/sample.mp4 --out out/demo/reconstruction --overwrite
	@echo "demo: reconstructed the bundled sample video with the bundled model (edgescene/assets/models);"
	@echo "demo: open out/demo/reconstruction/scene.glb in any glTF viewer, or read report.json."

# Debian packages some tests need, installed here when root with apt (never a downloaded binary):
# chromium for the browser tests, qemu-user (qemu-x86_64) for the int8 gate on an emulated CPU without VNNI.
# Elsewhere those tests skip and say why.
TEST_DEBS := $(if $(shell command -v chromium),,chromium) $(if $(shell command -v qemu-x86_64 || command -v qemu-x86_64-static),,qemu-user)

system-packages:
	@if [ -z "$(strip $(TEST_DEBS))" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "make: installing Debian's $(strip $(TEST_DEBS)) for the tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEST_DEBS) >/dev/null; \
	else echo "make: $(strip $(TEST_DEBS)) not installed (needs root and apt); the tests that need them will skip"; fi

# The Triton backend's tests start a real tritonserver (from the nvidia-pytriton wheel) with the Python
# of .venv-triton (pytriton needs numpy < 2, .venv has 2.x). Its wheels are Linux-only (x86_64, aarch64):
# elsewhere the Triton tests skip and say why; on Linux a failed install fails the build.
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed

$(TRITON_STAMP): tests/triton-server-requirements.txt
	@if [ "$$(uname -s)" = Linux ]; then \
	  $(PYTHON) -m venv $(TRITON_VENV) && \
	  $(TRITON_VENV)/bin/python -m pip --disable-pip-version-check -q install -r tests/triton-server-requirements.txt 2>&1 | $(QUIET) && \
	  $(TRITON_VENV)/bin/python -c "import pytriton, onnxruntime" && touch $(TRITON_STAMP); \
	else echo "make: nvidia-pytriton ships Linux wheels only; the Triton backend tests will skip"; fi

triton-server: $(TRITON_STAMP)

TEST_ENV := HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

# pytest's closing line gives the whole suite's time; --durations lists the slowest tests.
# TEST_WORKERS processes (pytest-xdist), each taking whole files (their module fixtures run once):
# on 2 cores the suite's many waits (servers starting, browsers, subprocesses) overlap. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP) system-packages $(TRITON_STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 $(ARGS)

test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -m "not slow and not browser" $(ARGS)

TYPED := edgescene.core edgescene.models edgescene.runtime edgescene.export edgescene.plugins edgescene.trt edgescene.mapping

# Every tool runs from the repository root and sees the one package edgescene/ (its layers are links).
lint: $(STAMP)
	$(BIN)/python scripts/check_portable.py
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(addprefix -p ,$(TYPED))
	$(BIN)/lint-imports

# each install extra alone in a fresh venv (runtime: reconstruct without torch; export: tiny VGGT to ONNX)
check-extras:
	PYTHON=$(PYTHON) bash scripts/check_extras.sh

check-aarch64: $(RUNTIME_STAMP)
	bash scripts/check_aarch64.sh $(ARGS)

device-check:
	$(PYTHON) scripts/device_check.py $(DEVICE_OUT) $(ARGS)

# Regenerate constraints.txt from .venv after an upgrade that passes make lint and make test. pip list
# (not pip freeze) writes name==version only, never "name @ file:///..." for a wheel installed from a path;
# local version labels (+cpu) are cut, so the pin is the public release every build satisfies.
constraints: $(STAMP)
	{ sed -n '1,2p' constraints.txt; \
	  $(BIN)/python -m pip list --format=freeze --exclude-editable --disable-pip-version-check \
	  | sed -E 's/\+[A-Za-z0-9.]+$$//' | grep -v -E '^(pip|setuptools|wheel)==' | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	$(BIN)/python scripts/check_portable.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
