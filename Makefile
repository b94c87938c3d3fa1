# proxyusage — run `make help` for the targets.
GO       ?= go
BIN      := bin/proxyusage
PKGS     := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Start the service (no DATABASE_URL: local PostgreSQL under .data/) and print a dev token
	@$(GO) build -o $(BIN) ./cmd/proxyusage
	@exec $(BIN) serve -print-dev-token

.PHONY: test
test: ## Run every test (about 5 minutes on 2 cores); the last line says what ran and what was skipped
	@echo "$(GO) test -race -count=1 -timeout 15m $(PKGS)   # about 5 minutes on 2 cores"
	@status=0; $(GO) test -race -count=1 -timeout 15m $(PKGS) || status=$$?; \
	 scripts/test-summary; exit $$status

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

.PHONY: build
build: ## Build bin/proxyusage
	$(GO) build -o $(BIN) ./cmd/proxyusage

.PHONY: migrate
migrate: ## Apply migrations (to DATABASE_URL, or the local cluster)
	$(GO) run ./cmd/proxyusage migrate

.PHONY: token
token: ## Print a dev token for the local setup (make token ARGS='-sub bob -roles service')
	@$(GO) run ./cmd/proxyusage token $(ARGS)

.PHONY: bench
bench: ## Full benchmark (own PostgreSQL + service; about 70 minutes on 2 cores, ARGS='-phases ...' for a part): table on the terminal and in BENCHMARKS.md
	$(GO) run ./cmd/bench $(ARGS)

.PHONY: bench-quick
bench-quick: ## Same benchmark at reduced sizes (about 12 minutes); results in .bench/BENCHMARKS-quick.md
	$(GO) run ./cmd/bench -quick -out .bench/BENCHMARKS-quick.md $(ARGS)

.PHONY: clean-data
clean-data: ## Stop and delete the local cluster under .data/
	-@if [ -f .data/postgres/postmaster.pid ]; then \
	  pg_ctl=$$(dirname $$(readlink -f $$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -1)))/pg_ctl; \
	  if [ $$(id -u) = 0 ]; then runuser -u postgres -- $$pg_ctl -D .data/postgres -m fast stop; else $$pg_ctl -D .data/postgres -m fast stop; fi; \
	fi
	rm -rf .data

FUZZTIME ?= 60s
.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (make test runs only their seed corpora)
	$(GO) test ./internal/ingest/wire -run '^$$' -fuzz '^FuzzDecodeOne$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/ingest/wire -run '^$$' -fuzz '^FuzzDecodeBatch$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/http -run '^$$' -fuzz '^FuzzParsePeriod$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/auth -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/auth -run '^$$' -fuzz '^FuzzVerifyClaims$$' -fuzztime $(FUZZTIME)
