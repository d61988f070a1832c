#!/usr/bin/env bash
# Turns `go test -bench` output of imageverify into one table, with the ratio of the cosign CLI baseline
# (measured in the same run) to each admission path.
awk '
/^Benchmark/ {
  name=$1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
  p50=""; p99=""; req=""; cps=""
  for (i=3; i<=NF; i++) {
    if ($(i+1)=="p50-µs") p50=$i
    if ($(i+1)=="p99-µs") p99=$i
    if ($(i+1)=="registry-requests/op") req=$i
    if ($(i+1)=="calls/s") cps=$i
  }
  if (p50 == "") { raw[++r]=$0; next }
  names[++n]=name; P50[name]=p50; P99[name]=p99; REQ[name]=req; CPS[name]=cps
}
END {
  cli=P50["CosignCLI"]
  printf "%-30s %12s %12s %18s %16s %14s\n", "path", "p50", "p99", "registry req/op", "CLI p50 / p50", "calls/s"
  for (i=1; i<=n; i++) {
    k=names[i]; ratio="-"
    if (cli!="" && P50[k]>0 && k ~ /^Verify/) ratio=sprintf("%.0fx", cli/P50[k])
    printf "%-30s %10s µs %10s µs %18s %16s %14s\n", k, P50[k], P99[k], (REQ[k]==""?"-":REQ[k]), ratio, (CPS[k]==""?"-":CPS[k])
  }
  for (i=1; i<=r; i++) print raw[i]
}'
