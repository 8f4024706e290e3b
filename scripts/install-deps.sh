#!/usr/bin/env bash
# Installs what the tests and benchmarks need, idempotently: a new machine
# has only Go and Debian's apt. Each tool is installed only when missing.
set -euo pipefail

need_apt=()
# (Debian packages the tests need are added here as features require them.)

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
