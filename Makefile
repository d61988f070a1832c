# mcp-warden Makefile. Every tool the project needs is installed into bin/ (or, for the control-plane
# binaries, a version-keyed cache outside the clone) at the versions pinned here.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
HELM ?= $(LOCALBIN)/helm
KYVERNO ?= $(LOCALBIN)/kyverno
COSIGN ?= $(LOCALBIN)/cosign
COSIGN3 ?= $(LOCALBIN)/cosign3

## Tool versions (pinned).
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION ?= v4.3.1
KYVERNO_VERSION ?= v1.19.1
COSIGN_VERSION ?= v2.6.5
COSIGN3_VERSION ?= v3.1.3
KWOK_VERSION ?= v0.8.0
export KWOK_VERSION
## MCP conformance suite (npm) and the Node.js it runs on when the node on PATH is older than 22.
CONFORMANCE_VERSION ?= 0.1.16
CONFORMANCE_NODE_VERSION ?= 22.23.5
export CONFORMANCE_VERSION CONFORMANCE_NODE_VERSION
## A third-party MCP server from npm on the real node: the reference server and the Node.js it runs on.
EVERYTHING_VERSION ?= 2026.8.31
EVERYTHING_NODE_VERSION ?= 22.23.5
export EVERYTHING_VERSION EVERYTHING_NODE_VERSION
## kube-router enforces NetworkPolicies on the real node (only its firewall runs).
KUBE_ROUTER_VERSION ?= v2.1.0
export KUBE_ROUTER_VERSION
## golangci-lint (built from the Go module proxy, cached outside the clone; config in .golangci.yml).
GOLANGCI_LINT_VERSION ?= v2.15.0
export GOLANGCI_LINT_VERSION

GO_TEST_FLAGS ?= -count=1 -timeout 25m
BENCH_FLAGS ?= -run '^$$' -benchtime 2s -timeout 90m
## Fleet sizes of the reconcile benchmark.
BENCH_SIZES ?= 100,500,1000

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs, RBAC and webhook manifests into config/.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./api/...;./controllers/...;./webhooks/...;./policy/guardrails/..." output:crd:artifacts:config=config/crd/bases
	go run ./hack/chartgen

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: verify-generated
verify-generated: controller-gen ## Fail if `make manifests generate` would change a checked-in file.
	@hack/verify-generated.sh "$(MAKE)"

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -w $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')

.PHONY: lint
lint: ## gofmt check, go vet and golangci-lint (pinned GOLANGCI_LINT_VERSION, built once into the cache; .golangci.yml).
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*')); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	go vet ./...
	@lint=$$(hack/golangci-lint.sh) && echo "$$lint run ./..." && "$$lint" run ./...

.PHONY: golangci-lint
golangci-lint: ## Build (or reuse from cache) golangci-lint at GOLANGCI_LINT_VERSION.
	@hack/golangci-lint.sh >/dev/null

.PHONY: control-plane
control-plane: $(LOCALBIN) ## Build (or reuse from cache) kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, etcd, KWOK and kubectl (linked into bin/).
	@dir=$$(hack/control-plane.sh) && ln -sf "$$dir/kubectl" $(LOCALBIN)/kubectl

.PHONY: conformance
conformance: ## Install (or reuse from cache) the MCP conformance suite CLI from the npm registry.
	@hack/conformance.sh >/dev/null

.PHONY: node
node: ## Install the real node's Debian packages when missing (containerd, runc, CNI plugins, iptables, ...) and build kube-router (cached).
	@hack/node.sh >/dev/null

.PHONY: everything
everything: ## Install (or reuse from cache) @modelcontextprotocol/server-everything and Node.js from the npm registry, as an image tree for the real node.
	@hack/everything.sh >/dev/null

.PHONY: helm-lint
helm-lint: helm ## Lint the chart and render it with default values and with every option on.
	$(HELM) lint charts/mcp-warden
	$(HELM) lint charts/mcp-warden --set serviceMonitor.enabled=true --set certManager.enabled=true --set argocd.healthCheck=true
	$(HELM) template mcp-warden charts/mcp-warden --namespace mcp-warden-system >/dev/null
	$(HELM) template mcp-warden charts/mcp-warden --namespace mcp-warden-system --set serviceMonitor.enabled=true --set certManager.enabled=true --set argocd.healthCheck=true >/dev/null

.PHONY: kyverno-test
kyverno-test: kyverno ## Run the Kyverno guardrail policies against good and bad resources with Kyverno's CLI.
	$(KYVERNO) test config/kyverno --remove-color

.PHONY: test
test: lint verify-generated control-plane node everything conformance helm-lint kyverno-test cosign cosign3 ## Run every test against a real local control plane (and a real node, as root on Linux).
	HELM="$(HELM)" COSIGN="$(COSIGN)" COSIGN3="$(COSIGN3)" MCP_CONFORMANCE="$$(hack/conformance.sh)" KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" MCP_WARDEN_NODE="$$(hack/node.sh)" MCP_WARDEN_EVERYTHING="$$(hack/everything.sh)" go test $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: control-plane cosign cosign3 ## Benchmarks as tables: admission per signature format vs the cosign CLI (v2 and v3), gateway vs direct (plaintext and TLS), sessions across 3 replicas vs 1 and re-initializes per replica loss, reconcile of 100/500/1000 servers (BENCH_SIZES) beside the control plane's floor and ToolHive's operator (hack/toolhive.sh), with requests per server.
	@mkdir -p bin; \
	if THV="$$(hack/toolhive.sh 2>bin/toolhive.log)"; then THV_SKIPPED=""; \
	else THV=""; THV_SKIPPED="hack/toolhive.sh failed: $$(grep -m1 -E 'Forbidden|error|cannot|requires' bin/toolhive.log || tail -1 bin/toolhive.log) (full log: bin/toolhive.log)"; echo "ToolHive skipped: $$THV_SKIPPED" >&2; fi; \
	COSIGN="$(COSIGN)" COSIGN3="$(COSIGN3)" MCP_WARDEN_BENCH_SIZES="$(BENCH_SIZES)" MCP_WARDEN_BENCH_PROFILES="$(CURDIR)/bin/profiles" MCP_WARDEN_TOOLHIVE="$$THV" KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" go test $(BENCH_FLAGS) -bench . ./supplychain/imageverify/ ./gateway/ ./controllers/ | tee bin/bench.txt | TOOLHIVE_SKIPPED="$$THV_SKIPPED" hack/bench-table.sh

##@ Build and run

.PHONY: build
build: ## Build the manager, gateway and mcp-warden CLI binaries into bin/.
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/gateway ./cmd/gateway
	go build -o $(LOCALBIN)/mcp-warden ./cmd/mcp-warden

.PHONY: demo
demo: control-plane node ## Start a local control plane (a real node as root on Linux, else simulated), run the operator, apply config/samples and report. KEEP=1 leaves it running.
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" MCP_WARDEN_NODE="$$(hack/node.sh)" go run ./cmd/demo $(if $(KEEP),--keep,)

##@ Release

.PHONY: release
release: ## Build, push, sign and attest the images; write digest-pinned manifests to dist/release. REGISTRY=... [COSIGN_KEY=cosign.key | SIGSTORE_ID_TOKEN=...] [PLATFORMS=linux/amd64,linux/arm64]
	@test -n "$(REGISTRY)" || { echo "usage: make release REGISTRY=ghcr.io/acme [COSIGN_KEY=cosign.key (password in COSIGN_PASSWORD) | SIGSTORE_ID_TOKEN=<OIDC token> for keyless]"; exit 2; }
	go run ./hack/release --registry "$(REGISTRY)" $(if $(COSIGN_KEY),--key "$(COSIGN_KEY)",) $(if $(PLATFORMS),--platforms "$(PLATFORMS)",) $(if $(VERSION),--version "$(VERSION)",)

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN): $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: helm
helm: $(HELM)
$(HELM): $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v4/cmd/helm,$(HELM_VERSION))

.PHONY: cosign
cosign: $(COSIGN)
$(COSIGN): $(LOCALBIN)
	$(call go-install-tool,$(COSIGN),github.com/sigstore/cosign/v2/cmd/cosign,$(COSIGN_VERSION))

# cosign v3 is installed under another name, beside v2 (go install would name both "cosign").
.PHONY: cosign3
cosign3: $(LOCALBIN)
	@[ -f "$(COSIGN3)-$(COSIGN3_VERSION)" ] && [ "$$(readlink -- "$(COSIGN3)" 2>/dev/null)" = "$$(basename "$(COSIGN3)-$(COSIGN3_VERSION)")" ] || { \
	set -e; \
	echo "Installing github.com/sigstore/cosign/v3/cmd/cosign@$(COSIGN3_VERSION) into $(LOCALBIN)"; \
	tmp=$$(mktemp -d); \
	GOBIN="$$tmp" go install github.com/sigstore/cosign/v3/cmd/cosign@$(COSIGN3_VERSION); \
	mv "$$tmp/cosign" "$(COSIGN3)-$(COSIGN3_VERSION)"; rmdir "$$tmp"; \
	ln -sf "$$(basename "$(COSIGN3)-$(COSIGN3_VERSION)")" "$(COSIGN3)"; \
	}

.PHONY: kyverno
kyverno: $(LOCALBIN)
	@hack/build-kyverno.sh $(KYVERNO_VERSION) $(LOCALBIN)

# go-install-tool installs a Go tool into bin/ under a version-suffixed name and links the plain name to
# it, so a changed pin installs the new version.
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$$(basename "$(1)-$(3)")" ] || { \
set -e; \
echo "Installing $(2)@$(3) into $(LOCALBIN)"; \
rm -f "$(1)"; \
GOBIN="$(LOCALBIN)" go install $(2)@$(3); \
mv "$(LOCALBIN)/$$(basename "$(1)")" "$(1)-$(3)"; \
ln -sf "$$(basename "$(1)-$(3)")" "$(1)"; \
}
endef
