# protoc-x: `make demo`, `make test`, `make build`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test build check bench mutate system-deps clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PROTOC_X_PURE=1 $(PY) -m pip install -q -c constraints.txt -e '.[test]'
	# xds-protos installs an old copy of opentelemetry-proto's modules over the real ones
	# (grpc/grpc#42926), which the OTLP exporter cannot load: the real ones again, on top
	$(PY) -m pip install -q --force-reinstall --no-deps -c constraints.txt opentelemetry-proto
	touch $(STAMP)

# The runtime's hot modules (COMPILED_MODULES in runtime/__init__.py) compiled in place with
# Cython (setup.py; pinned by constraints.txt), again whenever one of them or a .pxd changes.
# Without a C compiler the runtime stays Python.
COMPILED := $(VENV)/.compiled-stamp
HOT := runtime/__init__.py $(wildcard runtime/*.py runtime/*.pxd runtime/*/*.py runtime/*/*.pxd typed/*.pyx)
$(COMPILED): $(STAMP) setup.py $(HOT)
	PIP_CONSTRAINT=constraints.txt $(PY) -m pip install -q --no-deps -e .
	touch $(COMPILED)

# Debian packages the tests run against: memcached, redis-server, thrift-compiler for
# Apache thrift stubs, zookeeper (a standalone server, with the Java it needs), tshark (which
# loads the generated Wireshark dissectors) and librsvg2-bin (rsvg-convert renders the frame
# diagrams of protoc-x doc).
system-deps:
	@missing=""; \
	command -v memcached >/dev/null 2>&1 || missing="$$missing memcached"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v thrift >/dev/null 2>&1 || missing="$$missing thrift-compiler"; \
	test -f /usr/share/java/zookeeper.jar || missing="$$missing zookeeper"; \
	command -v tshark >/dev/null 2>&1 || missing="$$missing tshark"; \
	command -v rsvg-convert >/dev/null 2>&1 || missing="$$missing librsvg2-bin"; \
	if [ -n "$$missing" ]; then \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -E"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$SUDO apt-get install -y $$missing || { $$SUDO apt-get update && $$SUDO apt-get install -y $$missing; }; \
	fi

build: $(STAMP)
	$(VENV)/bin/protoc-x build specs -o generated --typed typed

check: $(STAMP)
	$(VENV)/bin/protoc-x check specs

demo: $(COMPILED)
	$(PY) -m protoc_x.demo

# npm packages of the node peers (tests/peers/node/*.js), pinned by the lock file.
NODE_STAMP := tests/peers/node/node_modules/.installed-stamp
$(NODE_STAMP): tests/peers/node/package-lock.json
	npm ci --prefix tests/peers/node --no-audit --no-fund
	touch $(NODE_STAMP)

# The whole suite on the compiled runtime, then the runtime's tests on its Python source.
test: $(COMPILED) system-deps $(NODE_STAMP)
	$(PY) -m pytest -q
	PROTOC_X_PURE=1 $(PY) -m pytest -q tests/runtime

bench: $(COMPILED) system-deps
	$(PY) benchmarks/codec_bench.py
	$(PY) benchmarks/measured_bench.py
	$(PY) benchmarks/summary.py
	$(PY) -m pip install -q -c constraints.txt Cython  # (the typed-scan experiment builds a module)
	$(PY) benchmarks/typed_scan_bench.py

# Mutation testing of the core (not part of `make test`; over an hour on 2 cores): docs/testing.md says how to read it.
MUTATE_STAMP := $(VENV)/.mutate-stamp
$(MUTATE_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,mutate]'
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP) system-deps
	$(PY) mutation/mutate.py

clean:
	rm -rf $(VENV) build *.egg-info
