#!/usr/bin/env bash
# Install what the test suite and `idis bench` run beside idis on a fresh machine of this kind:
# Debian's etcd (Patroni's consensus store), unbound and dnsperf (the DNS figure's baseline and
# load), kdig (a DNS client the tests use), wrk (HTTP load) and Chromium (the console's browser
# test drives it through Playwright, which downloads no browser of its own), and Patroni from
# PyPI in a virtual environment of its own. Idempotent: what is there is kept.
set -euo pipefail

DEBIAN_PACKAGES=(etcd-server unbound dnsperf knot-dnsutils wrk chromium)

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
