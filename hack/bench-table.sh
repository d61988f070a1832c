#!/usr/bin/env bash
# Turns `go test -bench` output (imageverify, gateway, controllers) into one table per area: admission
# with the ratio of the cosign CLI baseline (measured in the same run) to each path, the gateway against
# a direct connection and, over TLS, against a bare TLS reverse proxy (same run), sessions across three replicas against one (same run), and reconcile times beside the control plane's floor and ToolHive's
# operator (same run), requests per server and steady-state writes per fleet size. TOOLHIVE_SKIPPED, when
# set, says why ToolHive's column is empty.
awk -v thvskip="${TOOLHIVE_SKIPPED:-}" '
function metric(unit,   i) { for (i=3; i<NF; i++) if ($(i+1)==unit) return $i; return "" }
/servers, .*: (.* to Ready; control plane CPU|API server CPU samples)/ { line=$0; sub(/^ *[a-z_]+\.go:[0-9]+: /, "", line); cp[++ncp]=line; next }
/^Benchmark/ {
  name=$1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
  if (name ~ /^ReconcileToReady\//) { if (metric("s-to-all-ready") == "") next; sz=name; sub(/.*\//, "", sz); if (!(sz in RT)) rec[++nr]=sz; RT[sz]=metric("s-to-all-ready"); RF[sz]=metric("floor-s"); RX[sz]=metric("x-floor"); RQ[sz]=metric("requests/server"); RW[sz]=metric("writes/reconcile"); RH[sz]=metric("toolhive-s"); RHX[sz]=metric("toolhive/mcp-warden"); RC[sz]=metric("cp-cpu/floor"); next }
  if (name == "ProxyOverhead") {
    ng=1
    DP50=metric("direct-p50-µs"); DP99=metric("direct-p99-µs"); GP50=metric("gateway-p50-µs"); GP99=metric("gateway-p99-µs")
    DC=metric("direct-calls/s"); GC=metric("gateway-calls/s"); DPC=metric("direct-parallel-calls/s"); GPC=metric("gateway-parallel-calls/s")
    BP50=metric("bareproxy-p50-µs"); BR=metric("bareproxy/direct-%"); BPR=metric("bareproxy/direct-parallel-%")
    next
  }
  if (name == "ProxyOverheadTLS") {
    nt=1
    split("direct tlsgateway tlsbareproxy", tp, " ")
    for (j=1; j<=3; j++) { k=tp[j]; T50[k]=metric(k "-p50-µs"); T99[k]=metric(k "-p99-µs"); TC[k]=metric(k "-calls/s"); TPC[k]=metric(k "-parallel-calls/s") }
    next
  }
  if (name == "SessionsAcrossReplicas") {
    ns=1
    S3=metric("3replicas-calls/s"); S1=metric("1replica-calls/s"); S3P=metric("3replicas-p50-µs"); S1P=metric("1replica-p50-µs")
    SR=metric("3replicas/1replica-%"); SL=metric("reinits/lost-session"); SS=metric("reinits/session/replica-loss"); S404=metric("404-after-loss-p50-µs")
    next
  }
  p50=metric("p50-µs")
  if (p50 == "") { raw[++r]=$0; next }
  names[++n]=name; P50[name]=p50; P99[name]=metric("p99-µs"); REQ[name]=metric("registry-requests/op")
}
END {
  if (n > 0) {
    cli=P50["CosignCLI"]; cli3=P50["CosignV3CLI"]
    printf "admission (image verification)\n"
    printf "  %-30s %12s %12s %16s %16s\n", "path", "p50", "p99", "registry req/op", "CLI p50 / p50"
    for (i=1; i<=n; i++) {
      k=names[i]; ratio="-"
      base=cli; if (k ~ /bundle/) base=cli3  # each format against the CLI that writes it (v2: tags, v3: bundles)
      if (base!="" && P50[k]>0 && k ~ /^Verify/) ratio=sprintf("%.0fx", base/P50[k])
      printf "  %-30s %9s µs %9s µs %16s %16s\n", k, P50[k], P99[k], (REQ[k]==""?"-":REQ[k]), ratio
    }
  }
  if (ng > 0) {
    printf "\ngateway (tool calls through the gateway vs straight to the server, alternating in one run)\n"
    printf "  %-30s %12s %12s %12s %20s\n", "path", "p50", "p99", "calls/s", "calls/s, 8 sessions"
    printf "  %-30s %9s µs %9s µs %12s %20s\n", "direct", DP50, DP99, DC, DPC
    printf "  %-30s %9s µs %9s µs %12s %20s\n", "gateway", GP50, GP99, GC, GPC
    printf "  %-30s %9d µs %9d µs %11.0f%% %19.0f%%\n", "gateway - direct / ratio", GP50-DP50, GP99-DP99, 100*GC/DC, 100*GPC/DPC
    if (BR != "") printf "  %-30s %9s µs %12s %11.0f%% %19.0f%%\n", "bare proxy (hop alone)", BP50, "", BR, BPR
  }
  if (nt > 0) {
    printf "\ngateway over TLS (HTTPS as in a cluster, TLS 1.3; direct is the server itself on plaintext loopback; bare TLS proxy: httputil.ReverseProxy, same certificate; alternating in one run)\n"
    printf "  %-30s %12s %12s %12s %20s\n", "path", "p50", "p99", "calls/s", "calls/s, 8 sessions"
    printf "  %-30s %9s µs %9s µs %12s %20s\n", "direct", T50["direct"], T99["direct"], TC["direct"], TPC["direct"]
    printf "  %-30s %9s µs %9s µs %12s %20s\n", "gateway (TLS)", T50["tlsgateway"], T99["tlsgateway"], TC["tlsgateway"], TPC["tlsgateway"]
    printf "  %-30s %9s µs %9s µs %12s %20s\n", "bare TLS proxy", T50["tlsbareproxy"], T99["tlsbareproxy"], TC["tlsbareproxy"], TPC["tlsbareproxy"]
    printf "  %-30s %9d µs %9d µs %11.0f%% %19.0f%%\n", "gateway (TLS) - direct / ratio", T50["tlsgateway"]-T50["direct"], T99["tlsgateway"]-T99["direct"], 100*TC["tlsgateway"]/TC["direct"], 100*TPC["tlsgateway"]/TPC["direct"]
    printf "  %-30s %9d µs %9d µs %11.0f%% %19.0f%%\n", "gateway (TLS) - bare TLS proxy", T50["tlsgateway"]-T50["tlsbareproxy"], T99["tlsgateway"]-T99["tlsbareproxy"], 100*TC["tlsgateway"]/TC["tlsbareproxy"], 100*TPC["tlsgateway"]/TPC["tlsbareproxy"]
  }
  if (ns > 0) {
    printf "\nsessions across replicas (one session through a round-robin front, no affinity; alternating in one run)\n"
    printf "  %-30s %12s %12s\n", "replicas", "p50", "calls/s"
    printf "  %-30s %9s µs %12s\n", "1", S1P, S1
    printf "  %-30s %9s µs %12s\n", "3 (2 of 3 requests relayed)", S3P, S3
    printf "  %-30s %12s %11.0f%%\n", "3 / 1", "", SR
    printf "  replica loss: %s re-initialize per session it held, %s per session of all; 404 after %s µs (p50)\n", SL, SS, S404
  }
  if (nr > 0) {
    printf "\nreconcile (N servers created at once on the local control plane, same run; mcp-warden: every MCPServer Ready; floor: the five children the operator made for one server, copied per server and created directly with the same client rate limit, every Deployment available; ToolHive: every ToolHive MCPServer in status.phase Ready)\n"
    printf "  %-8s %15s %10s %12s %14s %16s %16s %14s %22s\n", "servers", "mcp-warden (s)", "floor (s)", "ToolHive (s)", "warden/floor", "ToolHive/warden", "requests/server", "steady writes", "control plane CPU/floor"
    for (i=1; i<=nr; i++) { k=rec[i]; printf "  %-8s %15s %10s %12s %14s %16s %16s %14s %22s\n", k, RT[k], (RF[k]==""?"-":RF[k]), (RH[k]==""?"-":RH[k]), (RX[k]==""?"- ":sprintf("%.2fx", RX[k])), (RHX[k]==""?"- ":sprintf("%.2fx", RHX[k])), (RQ[k]==""?"-":RQ[k]), RW[k], (RC[k]==""?"- ":sprintf("%.2fx", RC[k])) }
    if (thvskip != "") printf "  ToolHive skipped: %s\n", thvskip
    if (ncp > 0) printf "  where the control plane spent its CPU (its processes; the API server by its own profile):\n"
    for (i=1; i<=ncp; i++) printf "    %s\n", cp[i]
  }
  for (i=1; i<=r; i++) print raw[i]
}'
