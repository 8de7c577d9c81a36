# idempo — developer targets. `make test` is the whole suite (CI runs it).
GO        ?= go
LINT_VER  := v2.15.0
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
PKGS      := ./...

.PHONY: test test-loaded services lint fmt bench bench-save bench-compare bench-matrix demo stress exports verify-full screenshots

## test: start the servers the suite needs, then run every test with -race
test:
	./scripts/test.sh

## test-loaded: the suite with both cores kept busy by stress-ng (as on a shared CI host)
test-loaded:
	@command -v stress-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq stress-ng)
	stress-ng --cpu 2 --timeout 60m --quiet & pid=$$!; ./scripts/test.sh; status=$$?; kill $$pid 2>/dev/null; exit $$status

services:
	bash scripts/services.sh

## lint: go vet and golangci-lint (installed pinned when missing)
lint:
	$(GO) vet $(PKGS)
	@test -x $(GOBIN)/golangci-lint || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VER)
	$(GOBIN)/golangci-lint run $(PKGS)

fmt:
	@test -x $(GOBIN)/golangci-lint || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VER)
	$(GOBIN)/golangci-lint fmt $(PKGS)

## bench: the Go micro-benchmarks, 5 runs each, into .bench/new.txt
bench: services
	mkdir -p .bench
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS) | tee .bench/new.txt

## bench-matrix: every broker × store end to end, Kafka in key order (4
## partitions, 1,000 keys); prints the markdown table of docs/benchmarks.md
bench-matrix: services
	$(GO) run ./cmd/idempo bench --matrix --ordering key --partitions 4 --keys 1000

## bench-save: keep the last run as the baseline
bench-save:
	cp .bench/new.txt .bench/base.txt

## bench-compare: benchstat the last run against the baseline
bench-compare:
	$(GO) run golang.org/x/perf/cmd/benchstat@latest .bench/base.txt .bench/new.txt

## stress: the stress tests at full size
stress: services
	IDEMPO_STRESS_EVENTS=50000 $(GO) test -race -count=1 -run Stress -timeout 60m $(PKGS)

demo:
	$(GO) run ./cmd/idempo demo

## verify-full: the large verify runs recorded in docs/reliability.md
## (100,000 events with 20 consumer kills on two stacks; 56,000 events
## through outbox → broker → inbox with 24 kills of producers, relays and
## consumers). About 15–25 minutes on 2 cores.
verify-full: services
	$(GO) build -o .bench/idempo ./cmd/idempo
	.bench/idempo verify --broker kafka --store "postgres://postgres@127.0.0.1:5432/test?sslmode=disable" --events 100000 --kills 20 --timeout 25m --json
	.bench/idempo verify --broker amqp://guest:guest@127.0.0.1:5672/ --store redis://127.0.0.1:6379/0 --events 100000 --kills 20 --timeout 25m --json
	.bench/idempo verify --outbox --broker kafka --ordering key --store "postgres://postgres@127.0.0.1:5432/test?sslmode=disable" --events 56000 --kills 24 --timeout 50m --json
	.bench/idempo verify --outbox --broker amqp://guest:guest@127.0.0.1:5672/ --store "postgres://postgres@127.0.0.1:5432/test?sslmode=disable" --events 56000 --kills 24 --timeout 50m --json

## exports: count the public surface of the core packages (names per package)
exports:
	$(GO) run ./scripts/exportcount

## screenshots: the pictures of docs/console.md (docs/img/console-*.png),
## from a demo run on an embedded Kafka cluster, taken in headless Chromium
screenshots:
	$(GO) run ./cmd/idempo/internal/screenshots -out docs/img
