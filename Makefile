# `make test` is what CI runs (.ci/run calls it). It creates .venv, installs the package with its
# test extras, makes sure MariaDB, MySQL, PHP and WordPress are installed, and runs the whole suite
# (unit, integration, kafka on Apache Kafka, faults, and e2e against a real WordPress).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Wait (up to 10 min) for another apt/dpkg (unattended-upgrades on a fresh machine) instead of failing.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

.PHONY: test unit lint bench bench-snapshot demo venv mariadb mysql wordpress kafka schemas clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Integration tests start their own MariaDB from these binaries; install them when missing.
mariadb:
	@command -v mariadbd >/dev/null 2>&1 || test -x /usr/sbin/mariadbd || { \
	  echo "mariadbd not found: installing mariadb-server (apt-get)"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    $(APT_GET) update -qq && $(APT_GET) install -y -qq mariadb-server >/dev/null; \
	  else echo "error: install MariaDB >= 10.5 server binaries (mariadbd, mariadb-install-db) and rerun" >&2; exit 1; fi; }

# The integration, fault and e2e suites also run against a real Oracle MySQL. Debian 12 packages none,
# so this fetches Debian sid's mysql-server-core once into ~/.cache/wpcdc/mysql-<version> (private apt
# config, dpkg-deb -x; see cdc/dev/mysql.py) and prints its version. No MySQL is an error, not a skip.
mysql: venv
	@$(PY) -m cdc.dev.mysql

# The e2e suite drives a real WordPress (Debian's package) from the PHP CLI; install it when missing.
wordpress:
	@{ command -v php >/dev/null 2>&1 && php -m 2>/dev/null | grep -qx mysqli && test -f /usr/share/wordpress/wp-settings.php; } || { \
	  echo "php-cli, php-mysql or wordpress not found: installing them (apt-get)"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    $(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends \
	      php-cli php-mysql wordpress >/dev/null; \
	  else echo "error: install php-cli, php-mysql and WordPress in /usr/share/wordpress (Debian: apt-get install php-cli php-mysql wordpress) and rerun" >&2; exit 1; fi; }

# The Kafka-facing suite (tests/kafka) runs on a real Apache Kafka: Java 17 runs the broker from its
# jars, which Maven fetches once from Maven Central into ~/.cache/wpcdc/kafka-<version>.
kafka: venv
	@{ command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; } || { \
	  echo "java or mvn not found: installing openjdk-17-jre-headless and maven (apt-get)"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    $(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends \
	      openjdk-17-jre-headless maven >/dev/null; \
	  else echo "error: install Java 17+ and Maven (Debian: apt-get install openjdk-17-jre-headless maven) and rerun" >&2; exit 1; fi; }
	$(PY) -m cdc.dev.kafka fetch

lint: venv
	$(VENV)/bin/ruff check cdc tests bench examples
	$(VENV)/bin/ruff format --check cdc tests bench examples

# Two xdist workers, one per server leg (tests/conftest.py puts each leg in one xdist_group): the legs
# mostly wait on servers, WordPress and polls, so side by side they take about as long as the slower.
test: venv mariadb mysql wordpress kafka lint
	$(PY) -m pytest -q -n 2 --dist loadgroup --max-worker-restart 0

unit: venv
	$(PY) -m pytest -q tests/unit

schemas: venv
	$(VENV)/bin/wpcdc schemas export --out schemas

# `kafka` installs Java 17 and Maven when missing: the delivery comparison runs Apache Kafka, and the
# Debezium comparison's harness (bench/debezium/) is built with Maven on the first run (bench.py
# caches it in ~/.cache/wpcdc/debezium-3.6.1/; `--no-debezium` skips it).
bench: venv mariadb mysql kafka
	$(PY) bench/bench.py

bench-snapshot: venv mariadb
	$(PY) bench/bench_snapshot.py

clean:
	rm -rf $(VENV) var .pytest_cache

# Like `test`, installs the real WordPress the demo drives (the SQL-only variant is `--no-wordpress`).
demo: venv mariadb wordpress
	$(PY) -m cdc.dev.demo
