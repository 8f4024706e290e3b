# CryptoMesh. `make run` starts the control plane; `make test` runs every test.
GO        ?= go
BIN       := bin/cryptomesh
DATA_DIR  ?= ./data
GOMAXPROCS_BENCH ?= 2
BENCHTIME ?= 2s

.PHONY: build run test lint bench fuzz deps clean e2e-spire

build:
	$(GO) build -o $(BIN) ./cmd/cryptomesh

# The control plane with its embedded store on 127.0.0.1:19000, with the
# example ML pipeline loaded. On first start it creates
# $(DATA_DIR)/admin-token (mode 0600) and says where it is.
EXAMPLE ?= examples/ml-pipeline/mesh.yaml
run: build
	./$(BIN) server --data-dir $(DATA_DIR) --apply $(EXAMPLE)

# Installs what the tests need (idempotent), then vet, gofmt and every test.
test: deps lint
	$(GO) test -race -count=1 -timeout 60m ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Benchmarks report ratios against baselines measured in the same run.
bench: deps
	GOMAXPROCS=$(GOMAXPROCS_BENCH) $(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -benchmem ./...

# Runs each fuzz target for FUZZTIME (their seed corpora also run in `make test`).
# A short minimize time: the default 60 s stalls the run on long inputs.
FUZZTIME ?= 60s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg || exit 1; \
	  done; \
	done

# The control plane in SPIRE mode against a real spire-server and spire-agent,
# built once from the Go module proxy into bin/spire (SPIRE_VERSION, default
# v1.13.3). Not part of `make test`: the first build takes minutes.
e2e-spire:
	@GO=$(GO) ./scripts/e2e-spire.sh

deps:
	@./scripts/install-deps.sh

clean:
	rm -rf bin
