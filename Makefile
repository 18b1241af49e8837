# The README's two commands: `make demo` (the main job) and `make test`.
# Each creates what it needs on first use: .venv with the pinned stack
# (requirements/stack.txt, mmcv built from source and cached under ~/.cache),
# then this package, editable, with its compiled operator library.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STACK_STAMP := $(VENV)/.stack-installed
BUILD_STAMP := $(VENV)/.mmsoftpool-built
SOURCES := setup.py $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu)
TASK ?= detection
DETECTOR ?= retinanet
POOL ?= softpool
# CUDA compile check (no GPU needed): nvcc, CUDA_HOME and the CUDA headers of torch's wheels.
NVCC := $(shell command -v nvcc 2>/dev/null)
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda) $(realpath $(dir $(NVCC))..))

.PHONY: demo test test-fast lint venv build cuda-check gpu-check

demo: build
ifeq ($(TASK),video)
	$(PY) tools/demo_video.py --pool $(POOL)
else ifeq ($(TASK),detection)
	$(PY) tools/demo.py --detector $(DETECTOR) --pool $(POOL)
else
	$(error TASK must be detection or video, got TASK=$(TASK))
endif

test: build
	$(PY) -m pytest tests
ifneq ($(NVCC),)
	$(MAKE) cuda-check
endif

# What a contributor runs between changes: every test but those marked slow
# (trainings, wheel builds, the lower-capability reruns).
test-fast: build
	$(PY) -m pytest -m "not slow" tests

# What .pre-commit-config.yaml runs on commit, over the whole tree (fixes in place).
lint: venv
	$(VENV)/bin/ruff check --fix $$(git ls-files '*.py')
	$(VENV)/bin/clang-format -i $$(git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh')

venv: $(STACK_STAMP)
build: $(BUILD_STAMP)

$(STACK_STAMP): requirements/stack.txt tools/setup_venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash tools/setup_venv.sh
	touch $@

$(BUILD_STAMP): $(STACK_STAMP) $(SOURCES)
	$(PY) -m pip install --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

# Compiles the CUDA kernels for the H100 (sm_90) into a temporary directory, so
# the installed CPU build is left alone; fails if a CUDA source does not compile.
cuda-check: $(STACK_STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	echo "[cuda-check] compiling the CUDA kernels (sm_90) in $$tmp" && \
	FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 CUDA_HOME=$(CUDA_HOME) MAX_JOBS=2 \
	CPATH=$$(ls -d $(CURDIR)/$(VENV)/lib/python3*/site-packages/nvidia/*/include | tr '\n' ':') \
	$(PY) setup.py -q build_ext --build-temp "$$tmp/temp" --build-lib "$$tmp/lib" && \
	ls "$$tmp"/lib/mmsoftpool/_C*.so && echo "[cuda-check] CUDA sources compile"

# On a GPU machine: builds the CUDA kernels in place, runs their tests, the
# benchmark and compute-sanitizer (tools/gpu_check.sh); needs torch alone, and
# says "no CUDA device" elsewhere.
gpu-check:
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) bash tools/gpu_check.sh
