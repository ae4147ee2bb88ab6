# Two commands set everything up on a fresh machine (Python 3.11 with venv):
#   make demo   - install into .venv, then train the offline `quick` run into runs/quick (resumes if interrupted)
#   make test   - install into .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUN    ?= runs/quick

.PHONY: demo test install bench clean-cache

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: install
	@if [ -f $(RUN)/config.json ]; then \
		$(PY) training/pilot.py --resume --out-dir $(RUN); \
	else \
		$(PY) training/pilot.py --preset quick --out-dir $(RUN); \
	fi

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/train_throughput.py

clean-cache:
	rm -rf .cache
