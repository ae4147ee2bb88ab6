# Two commands set everything up on a fresh machine (Python 3.11 with venv):
#   make demo   - install into .venv, then run the whole offline `quick` pipeline into runs/quick: training,
#                 every analysis, reheating, figures and runs/quick/report.md (resumes if interrupted)
#   make test   - install into .venv, then run the test suite
#   make demo-seeds - the `cpu` preset (the paper's regime on a CPU) for three seeds side by side, then the claims
#                 ledger over them: runs/cpu_seeds/claims.md (resumes if interrupted)
#   make demo-seeds-controls - the same, with what the 45-minute default leaves out: the reheating controls of
#                 claim 19 and a second basin-depth trial for claim 21 (completes the seeds of make demo-seeds)
#   make demo-studies - the SGD-control study and the beta2 sweep of the `cpu` preset for the same three seeds, then
#                 the ledger of make demo-seeds rewritten with claims 16 and 18 (resumes if interrupted)
#   make results - docs/results.md from those ledgers and study tables
# Studies (each one command, resumable): make sgd-controls, make beta-sweep, make modadd, make modadd-early, make modadd-sweep, make symmetry, make ecd-eta
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUN    ?= runs/quick

SEED   ?= 42
SEEDS  ?= 42,271,314

.PHONY: demo demo-seeds demo-seeds-controls demo-studies results test install bench clean-cache sgd-controls beta-sweep modadd modadd-early modadd-sweep symmetry ecd-eta

install: $(VENV)/.installed

# pip byte-compiles every file of the wheels on one core (96 s for the whole install here); installing with
# --no-compile and then compiling on all cores takes 34 s + 34 s. The compiled files must exist: where
# PYTHONDONTWRITEBYTECODE is set, Python would otherwise recompile each module in every process (about 5 s per
# script). py312_ files of torch's test helpers are Python 3.12 syntax and are left alone.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	$(PY) -m compileall -q -j 0 -x 'py312_' $$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
	touch $@

demo: install
	scripts/run_seed.sh $(SEED) --preset quick --out-dir $(RUN)

demo-seeds: install
	scripts/run_seeds.sh --preset cpu --seeds $(SEEDS)

demo-seeds-controls: install
	scripts/run_seeds.sh --preset cpu --seeds $(SEEDS) --controls --basin-trials 2

demo-studies: install
	scripts/run_studies.sh --preset cpu --seeds $(SEEDS)

results: install
	$(PY) figures/make_results.py

sgd-controls: install
	$(PY) experiments/sgd_controls/run_study.py --preset quick --seed $(SEED)

beta-sweep: install
	experiments/beta_sweep/run_beta2.sh --preset quick

modadd: install
	$(PY) experiments/modadd/run_study.py --preset quick --seed 0

modadd-early: install
	$(PY) experiments/modadd/early_diagnostics.py --preset quick

modadd-sweep: install
	$(PY) experiments/modadd/difficulty_sweep.py --preset quick --seed 0

symmetry: install
	$(PY) experiments/symmetry/run_study.py --size cpu --seed 0

ecd-eta: install
	$(PY) experiments/symmetry/eta_study.py --size cpu

# two workers (pytest-xdist), each test file on one of them (its module fixtures built once): most tests wait on
# subprocesses and file I/O, so two files side by side use the two cores of a laptop better than one after another
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: install
	$(PY) benchmarks/train_throughput.py

clean-cache:
	rm -rf .cache
