#!/usr/bin/env bash
# Throughput benchmark (not a test): curl downloads from a vsftpd on loopback, straight and
# through a release build of ftpfront, alternated within one run. Prints every measurement,
# both medians in MB/s and the ratio ftpfront/direct (design target: >= 0.90).
#
#   sudo benches/bench.sh                          # 1 GiB file, 5 rounds
#   BENCH_SIZE_MB=256 BENCH_ROUNDS=3 sudo benches/bench.sh
#
# Needs root and vsftpd + curl (sudo scripts/install-test-deps.sh installs them).
# Environment: BENCH_SIZE_MB (default 1024), BENCH_ROUNDS (default 5),
# BENCH_MIN_RATIO (optional: exit 2 when the ratio is below it), BENCH_KEEP=1 (keep the
# temp dir with configs and logs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB="${BENCH_SIZE_MB:-1024}"
ROUNDS="${BENCH_ROUNDS:-5}"
VSFTPD="${VSFTPD:-/usr/sbin/vsftpd}"

die() { echo "bench: $*" >&2; exit 1; }

[[ "$SIZE_MB" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MB must be a positive integer"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ "$(id -u)" == 0 ]] || die "needs root (vsftpd runs as the launching user, root); try: sudo $0"
[[ -x "$VSFTPD" ]] || die "vsftpd not found at $VSFTPD: run scripts/install-test-deps.sh first"
command -v curl >/dev/null || die "curl not found: run scripts/install-test-deps.sh first"
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

echo "== cargo build --release"
cargo build --release --bin ftpfront
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
FTPFRONT="${TARGET_DIR:-target}/release/ftpfront"
[[ -x "$FTPFRONT" ]] || die "no binary at $FTPFRONT"

WORK="$(mktemp -d /tmp/ftpfront-bench.XXXXXX)"
VSFTPD_PID=""
PROXY_PID=""
cleanup() {
    local pid
    for pid in "$PROXY_PID" "$VSFTPD_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            # vsftpd runs in its own process group (setsid): end its session processes too.
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        echo "bench: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

chmod 755 "$WORK"
mkdir -p "$WORK/root" "$WORK/empty"
chmod 755 "$WORK/root" "$WORK/empty"

# A free TCP port on 127.0.0.1 (the kernel picks one, we release it at once).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# A passive range below the ephemeral ports whose ports are all free now.
free_range() {
    python3 - "$1" <<'PY'
import os, socket, sys
n = int(sys.argv[1])
for i in range(1200):
    start = 20000 + ((os.getpid() + i * 37) % 1200) * 10
    ok = True
    for p in range(start, start + n):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(f"{start}-{start + n - 1}")
        sys.exit(0)
sys.exit("no free passive range")
PY
}
# Waits until HOST:PORT greets with 220.
wait_220() {
    local port="$1" what="$2" pid="$3" line
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$what exited at start (see logs in $WORK; BENCH_KEEP=1 keeps them)"
        fi
        # (braces: the 2>/dev/null must not stay on the shell after exec)
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            line=""
            read -r -t 2 line <&3 || true
            printf 'QUIT\r\n' >&3 || true
            exec 3<&- 3>&-
            [[ "$line" == 220* ]] && return 0
        fi
        sleep 0.1
    done
    die "$what did not greet with 220 on port $port"
}

FILE="$WORK/root/bench.bin"
echo "== creating a ${SIZE_MB} MiB file"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$FILE"
chmod 644 "$FILE"
SIZE_BYTES="$(stat -c %s "$FILE")"

VSFTPD_PORT="$(free_port)"
cat >"$WORK/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$VSFTPD_PORT
background=NO
seccomp_sandbox=NO
run_as_launching_user=YES
secure_chroot_dir=$WORK/empty
tcp_wrappers=NO
connect_from_port_20=NO
anonymous_enable=YES
local_enable=NO
write_enable=NO
ftp_username=nobody
anon_root=$WORK/root
no_anon_password=YES
xferlog_enable=NO
vsftpd_log_file=$WORK/vsftpd.log
EOF
chmod 600 "$WORK/vsftpd.conf"
setsid "$VSFTPD" "$WORK/vsftpd.conf" </dev/null >"$WORK/vsftpd.out" 2>&1 &
VSFTPD_PID=$!
wait_220 "$VSFTPD_PORT" vsftpd "$VSFTPD_PID"

PROXY_PORT="$(free_port)"
METRICS_PORT="$(free_port)"
PASSIVE="$(free_range 20)"
cat >"$WORK/ftpfront.toml" <<EOF
[listen]
control = "127.0.0.1:$PROXY_PORT"

[passive]
ports = "$PASSIVE"
public_address = "127.0.0.1"
bind = "127.0.0.1"

[[backends]]
name = "vsftpd"
address = "127.0.0.1:$VSFTPD_PORT"

[routing]
default = "vsftpd"

[metrics]
listen = "127.0.0.1:$METRICS_PORT"
EOF
RUST_LOG="${RUST_LOG:-warn}" setsid "$FTPFRONT" run --config "$WORK/ftpfront.toml" \
    </dev/null >"$WORK/ftpfront.log" 2>&1 &
PROXY_PID=$!
if ! (wait_220 "$PROXY_PORT" ftpfront "$PROXY_PID"); then
    sed 's/^/  ftpfront: /' "$WORK/ftpfront.log" | tail -20 >&2
    exit 1
fi

DIRECT_URL="ftp://127.0.0.1:$VSFTPD_PORT/bench.bin"
PROXY_URL="ftp://127.0.0.1:$PROXY_PORT/bench.bin"

# Prints the download speed in bytes/s; fails when the transfer is incomplete.
measure() {
    local url="$1" out speed size
    out="$(curl -sS --max-time 600 -o /dev/null -w '%{speed_download} %{size_download}' "$url")" ||
        die "curl $url failed"
    read -r speed size <<<"$out"
    [[ "$size" == "$SIZE_BYTES" ]] || die "curl $url got $size of $SIZE_BYTES bytes"
    printf '%s\n' "${speed%.*}"
}
mbps() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "== warm-up (not counted)"
measure "$DIRECT_URL" >/dev/null
measure "$PROXY_URL" >/dev/null

echo "== ${ROUNDS} rounds of ${SIZE_MB} MiB: direct = curl -> vsftpd, ftpfront = curl -> ftpfront -> vsftpd"
direct=()
proxied=()
for round in $(seq 1 "$ROUNDS"); do
    # Alternate who goes first, so neither side always gets the warmer caches.
    if ((round % 2)); then order=(direct ftpfront); else order=(ftpfront direct); fi
    for which in "${order[@]}"; do
        if [[ "$which" == direct ]]; then
            speed="$(measure "$DIRECT_URL")"
            direct+=("$speed")
        else
            speed="$(measure "$PROXY_URL")"
            proxied+=("$speed")
        fi
        printf 'round %d  %-8s  %10s MB/s\n' "$round" "$which" "$(mbps "$speed")"
    done
done

direct_median="$(printf '%s\n' "${direct[@]}" | median)"
proxy_median="$(printf '%s\n' "${proxied[@]}" | median)"
ratio="$(awk -v p="$proxy_median" -v d="$direct_median" 'BEGIN { printf "%.3f", p / d }')"
echo "== results (${SIZE_MB} MiB x ${ROUNDS} rounds)"
printf 'median direct    %10s MB/s\n' "$(mbps "$direct_median")"
printf 'median ftpfront  %10s MB/s\n' "$(mbps "$proxy_median")"
printf 'ratio ftpfront/direct  %s\n' "$ratio"

if [[ -n "${BENCH_MIN_RATIO:-}" ]] && awk -v r="$ratio" -v m="$BENCH_MIN_RATIO" 'BEGIN { exit !(r < m) }'; then
    echo "bench: ratio $ratio is below BENCH_MIN_RATIO=$BENCH_MIN_RATIO" >&2
    exit 2
fi
