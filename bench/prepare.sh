#!/usr/bin/env bash
# Installs the Debian packages the benchmarks need (bench/run, bench/scale), if missing: the
# proxy to compare with, the backends, the load generators, etcd, taskset.
set -euo pipefail
sudo=""
[[ "$(id -u)" != 0 ]] && sudo="sudo"
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v etcd >/dev/null || need+=(etcd-server)
command -v taskset >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
    echo "installing Debian packages: ${need[*]}" >&2
    $sudo apt-get update -qq
    # Debian starts haproxy/nginx/iperf3 services on install where it can; the benchmarks never
    # use them (they start their own on free loopback ports).
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
fi
