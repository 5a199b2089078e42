#!/usr/bin/env bash
# Install what the test suite runs beside idis on a fresh machine of this kind: Debian's
# etcd, unbound, dnsperf, kdig, wrk, iproute2 (network namespaces, tc netem) and Chromium, and
# Patroni from PyPI in a virtual environment of its own. Idempotent: what is there is kept.
set -euo pipefail

DEBIAN_PACKAGES=(etcd-server etcd-client unbound dnsperf knot-dnsutils wrk iproute2 chromium chromium-driver)

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Patroni runs PostgreSQL as the user postgres, so its Python must be readable by that user:
# a venv from the system's Python, outside root's home.
PATRONI_VENV=${IDIS_PATRONI_VENV:-/opt/idis-patroni}
if [ ! -x "$PATRONI_VENV/bin/patroni" ]; then
  /usr/bin/python3 -m venv "$PATRONI_VENV"
  "$PATRONI_VENV/bin/pip" install -q 'patroni[etcd3]==4.1.5' 'psycopg[binary]>=3.1'
fi
