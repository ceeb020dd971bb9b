# The two commands: `make run` and `make test`.
CARGO ?= cargo
DEV := $(CURDIR)/.dev
AGENT := target/debug/access-token-agent

.PHONY: run test deps build lint bench soak profile deb systemd-test hosts-test

## Run the agent on a development SoftHSM token under .dev/ (created on first use).
run: deps build
	hsm-config/dev-token.sh
	hsm-config/dev-run.sh

## Run every test: unit tests and the black-box tests against real SoftHSM
## (tests/tests/, one target per behaviour: http_api, grants, limits,
## hsm_faults, enrolment, lifecycle, client, packaging, fixture; one alone:
## cargo test -p integration-tests --test TARGET), then the hosts tests and
## the Debian package under a real systemd, as root (each says so in its
## last line when it cannot run).
test: deps build
	$(CARGO) test --workspace
	@$(MAKE) --no-print-directory hosts-test
	@$(MAKE) --no-print-directory systemd-test

## target/debian/access-token-agent_<version>_<arch>.deb, checked by lintian.
deb:
	hsm-config/install-deps.sh deb
	packaging/build-deb.sh
	lintian --fail-on error $$(ls target/debian/access-token-agent_*.deb | tail -n 1)

## Three hosts' agents on one network HSM, each host a network namespace
## (README.md, "Many hosts, one key").
hosts-test: build
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "hosts tests: NOT RUN: they need root (network namespaces)"; \
	else \
		hsm-config/install-deps.sh hosts && tests/hosts/run.sh; \
	fi

## The package installed in a container booted with systemd (systemd-nspawn):
## the README's install steps, then the units' promises, each a test.
systemd-test:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "systemd tests: NOT RUN: they need root (systemd-nspawn, overlay mounts)"; \
	else \
		$(MAKE) --no-print-directory deb && hsm-config/install-deps.sh systemd && tests/systemd/run.sh; \
	fi

## Install SoftHSM2, opensc and build dependencies when missing.
deps:
	hsm-config/install-deps.sh

build:
	$(CARGO) build --workspace --bins

## Formatting and lints, as CI-clean code needs them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Benchmarks (release build): writes BENCHMARKS.md (its hand-written part, from
## "Reading these figures", is kept). Never part of `make test`.
## `make bench BEFORE=<commit>` also builds that commit's agent and measures
## fresh signing on both in turn, for a before/after ratio from one run.
## Its last section counts instructions per token under valgrind (callgrind),
## which repeat where tokens/s do not; alone, replacing only that section:
## target/release/access-token-bench --only-instructions --write BENCHMARKS.md
bench: deps
	command -v valgrind >/dev/null || apt-get install -y valgrind
	$(CARGO) build --release --workspace --bins
ifneq ($(BEFORE),)
	rm -rf target/before/$(BEFORE) && mkdir -p target/before/$(BEFORE)
	git archive $(BEFORE) | tar -x -C target/before/$(BEFORE)
	$(CARGO) build --release -p access-token-agent --manifest-path target/before/$(BEFORE)/Cargo.toml --target-dir target/before/$(BEFORE)/target
	target/release/access-token-bench --before-agent target/before/$(BEFORE)/target/release/access-token-agent --write BENCHMARKS.md
else
	target/release/access-token-bench --write BENCHMARKS.md
endif

## Soak (release build): 10 minutes at 300 requests/s with 20-second tokens;
## fails if resident memory grows 5 % or more after the first minute, or any
## request fails. Never part of `make test`.
soak: deps
	$(CARGO) build --release --workspace --bins
	target/release/access-token-bench soak --minutes 10 --write target/soak.md

## Profile (release code with line tables): the agent signing every ES256
## request at 64 connections under `perf record`; samples in target/perf.data.
## Other steps: target/profiling/access-token-bench profile --help
profile: deps
	command -v perf >/dev/null || apt-get install -y linux-perf
	$(CARGO) build --profile profiling --workspace --bins
	target/profiling/access-token-bench profile
	perf report -i target/perf.data --no-children --sort comm,dso -g none --percent-limit 1 --stdio 2>/dev/null | grep -v '^[#]' | grep -v '^$$'
	perf report -i target/perf.data --no-children --sort sym -g none --percent-limit 1 --stdio 2>/dev/null | grep -v '^[#]' | grep -v '^$$'
