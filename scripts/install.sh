#!/usr/bin/env bash
# Installs what Hangar needs on a Debian machine (as root) and builds it. Idempotent: a second run only
# checks. Sourced by scripts/start.sh and scripts/test.sh; safe to run on its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'hangar-install: %s\n' "$*"; }
die() { printf 'hangar-install: error: %s\nhint: %s\n' "$1" "$2" >&2; exit 1; }

# Debian packages:
# - build: a C++ toolchain and python3 build better-sqlite3 (no prebuilt binary is fetched);
# - machines: crun and runc (whichever works here is used), skopeo and umoci (pull and unpack images),
#   docker-registry (Hangar's own image registry), tini (PID 1 in every machine), iproute2 (namespaces),
#   e2fsprogs and util-linux (volumes: ext4 images, loop mounts, fsfreeze for snapshots), nftables
#   (isolation between private networks), openssl (the proxy's development certificate), bsdutils
#   (`script`: the terminal of `hangar ssh console`);
# - tests: busybox-static (the test images), sqlite3 (also the operator's backup tool, docs/operations.md),
#   dnsmasq-base (the peer of bench/dns, which the tests smoke-run; only the binary, no service),
#   wrk and haproxy (the load generator and the peer of bench/proxy; only the binaries: the packaged
#   haproxy service is disabled below when this script installs it), systemd (its `systemd-analyze
#   verify` checks the unit in docs/operations.md; nothing is started);
# - `hangar deploy`: buildah (builds images from Dockerfiles without a daemon).
DEBIAN_PACKAGES=(ca-certificates python3 make g++ sqlite3 crun runc skopeo umoci docker-registry tini iproute2
  e2fsprogs util-linux bsdutils busybox-static nftables dnsmasq-base openssl buildah wrk haproxy systemd)

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]}" "run this script as root, or: apt-get install ${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The benchmark runs its own haproxy; the package's service (started and enabled by the install on a
  # systemd host) would only hold a daemon with Debian's empty configuration.
  if [[ " ${missing[*]} " == *" haproxy "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now haproxy >/dev/null 2>&1 || true
  fi
fi

node_version=$(node -p 'process.versions.node')
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=18)?0:1)' ||
  die "Node.js $node_version is too old; Hangar needs Node 20.18 or newer" \
    "install Node 20 or newer (Debian 13 ships it; on Debian 12 use the NodeSource or distribution backports package)"

# npm dependencies, as pinned by package-lock.json; redone only when the lock file changed since the last
# install. (`npm install`, not `npm ci`: npm ci rejects a lock that records only this platform's build of
# an optional native package, which is what npm writes here.)
stamp=node_modules/.hangar-lock-sha
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(sha256sum package-lock.json | cut -d' ' -f1)" ]; then
  say "installing npm dependencies (better-sqlite3 compiles from source: about 1-2 minutes)"
  npm install --no-audit --no-fund --loglevel=error
  sha256sum package-lock.json | cut -d' ' -f1 > "$stamp"
fi

say "building"
npx tsc -b packages/sdk packages/cli packages/server
say "ready"
