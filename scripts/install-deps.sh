#!/usr/bin/env bash
# Installs what the tests and benchmarks need, idempotently: a new machine
# has only Go and Debian's apt. Each tool is installed only when missing.
set -euo pipefail

need_apt=()
# A real etcd for the etcd store's tests (registry/store/etcdstore/etcdtest
# runs it on loopback ports). Debian's 3.4 server; the Go client is v3.7.
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
# A real Prometheus and promtool: the metrics test lints /metrics with
# promtool and has a Prometheus server scrape the real binary.
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || need_apt+=(prometheus)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${need_apt[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
go mod download
