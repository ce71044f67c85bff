# rulebot: the two commands that must work on a fresh Debian machine are
#   make demo   and   make test
# Everything else here is for developers and operators.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo demo-web lint unit integration system-deps venv js-deps bench bench-engine bench-reload bench-relations bench-counters bench-shadow bench-memory bench-scale bench-xmpp soak fuzz clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# The JavaScript client's packages, from the npm registry, as its lock file says.
JS_STAMP := clients/js/node_modules/.installed
$(JS_STAMP): clients/js/package.json clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error
	@touch $(JS_STAMP)

js-deps: system-deps $(JS_STAMP)

system-deps:
	@bash scripts/install-system-deps

lint: $(STAMP)
	$(VENV)/bin/ruff check rulebot tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/rulebot validate rules rules/friends
	$(VENV)/bin/rulebot test --require-coverage tests/rules/*.yaml

unit: $(STAMP) system-deps
	$(VENV)/bin/pytest -q -m "not integration"

integration: $(STAMP) system-deps js-deps
	$(VENV)/bin/pytest -q -m integration

# The whole suite: lint, type checks, unit tests, then integration tests
# against private Prosody and ejabberd servers started by the tests.
test: system-deps $(STAMP) js-deps lint
	$(VENV)/bin/pytest -q

demo: system-deps $(STAMP)
	$(PY) -m scripts.demo

# The friends demo in a browser: open the URL it prints (Ctrl-C stops).
demo-web: system-deps $(STAMP) js-deps
	$(PY) -m scripts.webdemo

bench-engine: $(STAMP)
	$(PY) -m bench.engine

bench-xmpp: system-deps $(STAMP)
	$(PY) -m bench.xmpp

bench-reload: $(STAMP)
	$(PY) -m bench.reload

bench-relations: system-deps $(STAMP)
	$(PY) -m bench.relations

# The per-event cost of a windowed counter (count, read) in SQLite and PostgreSQL.
bench-counters: system-deps $(STAMP)
	$(PY) -m bench.counters

# Shadow mode and the inbound archive on the decision path; rulebot replay's rate.
bench-shadow: $(STAMP)
	$(PY) -m bench.shadow

# Resident memory of `rulebot run` with 10,000 rules and 100,000 relations (private Prosody).
bench-memory: system-deps $(STAMP)
	$(PY) -m bench.memory

# 1, 2 and 4 workers on ejabberd + PostgreSQL, each capped at 5% of a core
# (cgroup v1), then uncapped against direct delivery.
bench-scale: system-deps $(STAMP)
	$(PY) -m bench.scale --quota 0.05

bench: bench-engine bench-reload bench-relations bench-counters bench-shadow bench-xmpp bench-scale

# Long runs, not part of `make test`: kill -9 at points chosen by what users
# received, two kills per 2,000-event run, over an offline backlog at login,
# bursts and stateful friend cycles, both servers, both garbage-collector
# settings: four rounds of different kill points, 40 kills per server
# (summary table: scripts/crash_summary.py); 25 restarts under CPU load per
# server, each pinged the moment the bot logs in; then 200,000 events at half
# capacity; then several workers (5,000 events a stream: a worker hung and
# killed or resumed, an ejabberd node stopped, a rolling restart).
CRASH_REPORT ?= crash-report.jsonl
soak: system-deps $(STAMP)
	rm -f $(CRASH_REPORT)
	for seed in 1 2 3 4; do RULEBOT_CRASH_REPORT=$(CRASH_REPORT) RULEBOT_CRASH_SEED=$$seed \
	  RULEBOT_CRASH_EVENTS=2000 RULEBOT_CRASH_PAIRS=10 RULEBOT_CRASH_CYCLES=50 \
	  $(VENV)/bin/pytest -q -s tests/integration/test_crash.py || exit 1; done
	$(PY) -m scripts.crash_summary $(CRASH_REPORT)
	RULEBOT_RACE_ROUNDS=25 $(VENV)/bin/pytest -q -s tests/integration/test_restart_race.py
	RULEBOT_SOAK_EVENTS=200000 $(VENV)/bin/pytest -q -s tests/integration/test_soak.py
	RULEBOT_WORKERS_EVENTS=5000 RULEBOT_CLUSTER_EVENTS=5000 RULEBOT_CLUSTER_OUTAGE=35 \
	  $(VENV)/bin/pytest -q -s \
	  tests/integration/test_workers.py tests/integration/test_cluster.py

# 1,000,000 generated events and rule files through the decoder and the loader.
fuzz: $(STAMP)
	$(PY) -m scripts.fuzz --cases 1000000 --parallel

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
