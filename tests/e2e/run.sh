#!/usr/bin/env bash
# ftpfront's acceptance test: a real dual-NAT network in network namespaces, three real FTP
# servers, three real FTP clients (issue 3). Run as root:
#
#     cargo build && sudo bash tests/e2e/run.sh        # or: cargo test --test e2e
#
# Environment: FTPFRONT_BIN (default target/debug/ftpfront), E2E_SERVERS (default
# "vsftpd pure-ftpd proftpd"), E2E_FTPS=0 skips the FTPS scenarios 8 and 9, E2E_KEEP=1
# keeps the work directory (logs, configs, certificates), E2E_PROXY_LOG_FILTER (default
# debug). Needs ip, iptables, curl, lftp, python3, openssl, vsftpd, pure-ftpd and proftpd
# (scripts/install-test-deps.sh installs them).
#
#   client LAN 1                   the internet: 203.0.113.0/24
#   192.168.1.0/24                 (a bridge in namespace ffe-wan)
#   [c1  .2]--+
#             +--[nat1]--- .11 ---+
#   [c1b .3]--+  MASQUERADE       |
#                                 +--- .66 [stray]  (a host on the internet, not a client)
#   client LAN 2                  |
#   192.168.2.0/24                |
#   [c2  .2]-----[nat2]--- .12 ---+
#                MASQUERADE       |
#                                 +--- .10 [edge] ---10.10.0.1--- DMZ ---10.10.0.2 [proxy]
#                                           |                                    ftpfront
#                                           |  DNAT: 21 and 30000-30009 -> proxy (scenario 7:
#                                           |  21 and 30000 only; scenario 9: also 990;
#                                           |  scenarios 1 and 8: 21 -> a server)
#                                           |
#                                           +---10.20.0.1--- backend LAN 10.20.0.0/24
#                                                            [backend] vsftpd .2,
#                                                            pure-ftpd .3, proftpd .4,
#                                                            vsftpd-tls .2:2121 (FTPS)
#
# - The client NAT routers have NO default route, only their WAN subnet: like real clients,
#   they cannot reach anybody's private addresses (a 10.20.x address in a 227 is a dead end).
# - The edge forwards only what the test publishes (scenario 1: port 21 straight to one
#   server; otherwise 21 and the passive range to ftpfront); nothing else gets in.
# - ftpfront reaches the backend LAN through the edge (its default route); clients cannot.
# - Clients run in c1, c1b, c2: curl (LIST with EPSV; transfers with --disable-epsv
#   --no-ftp-skip-pasv-ip, so it trusts the 227 address), lftp (PASV, its own address
#   handling), Python ftplib via the e2e form of tests/clients/ftp_client.py (PASV
#   trusting the 227, and EPSV sent by hand). Each client's whole conversation is kept and
#   read by the assertions.
# - Namespaces and interfaces are named ffe-*; the login is a system user ffe-e2e with a
#   random password and a home under /tmp/ffe-e2e.*, created and removed by the run; all
#   three servers check it against /etc/shadow (vsftpd through PAM) and chroot it there.
#   Everything is torn down at exit (also on failure or Ctrl-C); leftovers of a killed run
#   are removed before starting.
#
# Scenarios, per server (the matrix at the end lists every check):
#   1  without ftpfront (edge forwards 21 to the server): clients log in, cannot list/get
#   2  through ftpfront: LIST (+MLSD), 50 MiB download and upload, SHA-256 equal, per client
#   3  every 227 a client saw names 203.0.113.10 and a port in the forwarded range
#   4  active mode from behind a NAT: a clear refusal, no hang (same_ip: 501; deny: 502)
#   5  a foreign host connecting to a reserved passive port is refused and counted
#   6  two clients behind the same NAT transfer at the same time, data not mixed
#   7  one forwarded data port (Kubernetes): two NATs share it; a second client behind the
#      same NAT gets 425 at once while the port is pending for its address, then succeeds
#
# FTPS (issue 4; certificates from a test CA made with openssl, see lib/ftps.sh), once:
#   8  without ftpfront (edge forwards 21 to vsftpd-tls): curl with explicit FTPS from c1
#      and c2 logs in over TLS, cannot list/get (no NAT can rewrite an encrypted 227)
#   9  through ftpfront (tls.mode optional, implicit FTPS on 990) to the plain vsftpd and to
#      vsftpd-tls (backend tls = "explicit", verified with the test CA): from c1 and c2,
#      explicit FTPS with curl --ssl-reqd, lftp ftp:ssl-force + ssl-protect-data and ftplib
#      FTP_TLS + prot_p(); implicit FTPS with curl ftps:// and ftplib; each verifies the
#      certificate, downloads and uploads 20 MiB (SHA-256 equal); every 227 is public
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$E2E_DIR/../.."
PATH="$PATH:/usr/sbin:/sbin" # ip, iptables, useradd (not on PATH under some sudo setups)

# shellcheck source=lib/common.sh
source "$E2E_DIR/lib/common.sh"
# shellcheck source=lib/servers.sh
source "$E2E_DIR/lib/servers.sh"
# shellcheck source=lib/topology.sh
source "$E2E_DIR/lib/topology.sh"
# shellcheck source=lib/proxy.sh
source "$E2E_DIR/lib/proxy.sh"
# shellcheck source=lib/clients.sh
source "$E2E_DIR/lib/clients.sh"
# shellcheck source=lib/ftps.sh
source "$E2E_DIR/lib/ftps.sh"

FOREIGN_IP_REJECTS='ftpfront_data_connections_rejected_total{reason="foreign_ip"}'
SLOW_RATE=$((4 * 1024 * 1024)) # bytes/s: long enough for transfers to overlap

# --- scenario 1: the problem, reproduced without ftpfront --------------------------------

scenario_1_without_ftpfront() {
    local server=$1
    edge_publishes_server "${SERVER_IP[$server]}"
    local client
    for client in "${CLIENTS[@]}"; do
        run_check "1 no proxy: login ok, LIST+RETR fail" "$server" "$client" \
            client_logs_in_but_cannot_list_or_get "$client"
    done
}

client_logs_in_but_cannot_list_or_get() {
    local client=$1 list_status=0 get_status=0
    client_list "$client" c1 >"$CHECK_DIR/list.out" || list_status=$?
    client_get "$client" c1 big.bin "$CHECK_DIR/big.bin" >"$CHECK_DIR/get.out" || get_status=$?
    cat "$CHECK_DIR/list.out" "$CHECK_DIR/get.out"
    assert_logged_in "$CHECK_DIR/list.out"
    assert_logged_in "$CHECK_DIR/get.out"
    ((list_status != 0)) || fail "$client listed the directory without ftpfront"
    assert_lacks "$CHECK_DIR/list.out" 'big\.bin' "a listing reached the client"
    ((get_status != 0)) || fail "$client downloaded without ftpfront"
    if [[ -f "$CHECK_DIR/big.bin" ]] && [[ "$(sha256_of "$CHECK_DIR/big.bin")" == "$BIG_SHA" ]]; then
        fail "the file arrived without ftpfront"
    fi
    report_note "exit $list_status/$get_status: $(first_error "$CHECK_DIR/list.out")"
}

first_error() {
    grep -Em1 '^(\* connect to .* failed|ERROR |ls: |get: )' "$1" | sed 's/^\* //' | cut -c1-70 || true
}

# --- scenarios 2 and 3: every client through ftpfront ----------------------------------

scenario_2_and_3_through_ftpfront() {
    local server=$1 client
    for client in "${CLIENTS[@]}"; do
        run_check "2 login + LIST" "$server" "$client" lists_the_directory "$server" "$client"
        if [[ ${SERVER_HAS_MLSD[$server]} == yes ]]; then
            run_check "2 MLSD" "$server" "$client" lists_with_mlsd "$server" "$client"
        else
            record_not_applicable "2 MLSD" "$server" "$client" "$server has no MLSD"
        fi
        run_check "2 download 50 MiB, SHA-256 equal" "$server" "$client" downloads_big_file "$server" "$client"
        run_check "2 upload 50 MiB, SHA-256 equal" "$server" "$client" uploads_big_file "$server" "$client"
        run_check "3 every 227 names 203.0.113.10, range" "$server" "$client" \
            passive_replies_name_the_public_address "$server" "$client"
    done
}

# Conversations kept for scenario 3.
transcript() { printf '%s\n' "$WORK/clients/$1-$2-$3.out"; }

lists_the_directory() {
    local server=$1 client=$2 out
    out=$(transcript "$server" "$client" list)
    client_list "$client" c1 >"$out" || { cat "$out"; fail "$client could not list"; }
    assert_logged_in "$out"
    assert_contains "$out" 'big\.bin' "LIST shows big.bin"
    assert_contains "$out" '^(> |---> )LIST' "the client sent LIST"
}

lists_with_mlsd() {
    local server=$1 client=$2 out
    out=$(transcript "$server" "$client" mlsd)
    client_mlsd "$client" c1 >"$out" || { cat "$out"; fail "$client could not list with MLSD"; }
    assert_contains "$out" 'big\.bin' "the listing shows big.bin"
    # lftp uses MLSD only when FEAT (which it sends before logging in) lists MLST.
    if ! grep -Eq '^(> |---> )MLSD' "$out"; then
        cat "$out"
        fail "$client did not send MLSD although $server has it; the FEAT reply it got:" \
            "$(feat_lines "$out")"
    fi
}

# The features a client was told, on one line.
feat_lines() {
    awk 'on && /^(<|<---) 211 / { exit } /^(<|<---) 211-/ { on = 1; next } on { print $NF }' "$1" |
        tr '\n' ' '
}

downloads_big_file() {
    local server=$1 client=$2 out local_file
    out=$(transcript "$server" "$client" get)
    local_file="$CHECK_DIR/big.bin"
    client_get "$client" c1 big.bin "$local_file" >"$out" || { cat "$out"; fail "$client download failed"; }
    assert_same_content "$local_file" "$BIG_SHA"
    report_speed "$(speed_in "$out")"
    rm -f "$local_file"
}

uploads_big_file() {
    local server=$1 client=$2 out remote
    out=$(transcript "$server" "$client" put)
    remote="up-$server-$client.bin"
    client_put "$client" c1 "$WORK/clients/upload-50M.bin" "$remote" >"$out" ||
        { cat "$out"; fail "$client upload failed"; }
    assert_same_content "$FTP_HOME/$remote" "$(sha256_of "$WORK/clients/upload-50M.bin")"
    report_speed "$(speed_in "$out")"
    rm -f "$FTP_HOME/$remote"
}

passive_replies_name_the_public_address() {
    local server=$1 client=$2 checked
    checked=$(assert_passive_replies_public "$PASSIVE_FIRST" "$PASSIVE_LAST" \
        "$WORK/clients/$server-$client-"*.out)
    report_note "$checked"
}

# --- scenario 4: active mode from behind a NAT -----------------------------------------

scenario_4_active_mode() {
    local server=$1
    run_check "4 active, same_ip: PORT refused (501)" "$server" curl curl_active_is_refused 501
    run_check "4 active, same_ip: PORT refused (501)" "$server" ftplib ftplib_active_is_refused 501
    run_check "4 active, PORT to own NAT addr: 425" "$server" ftplib port_to_own_nat_fails_fast
    start_proxy "$server" "$PASSIVE_FIRST-$PASSIVE_LAST" deny
    run_check "4 active, deny: PORT refused (502)" "$server" curl curl_active_is_refused 502
    run_check "4 active, deny: PORT refused (502)" "$server" ftplib ftplib_active_is_refused 502
    start_proxy "$server"
}

# curl -P - announces its own (private) address with EPRT, then PORT.
curl_active_is_refused() {
    local code=$1 out="$CHECK_DIR/curl.out" status=0 started=$SECONDS
    curl_in c1 --ftp-port - "$FTP_URL/" >"$out" 2>&1 || status=$?
    cat "$out"
    ((status != 0)) || fail "curl listed in active mode from behind a NAT"
    ((SECONDS - started < 15)) || fail "took $((SECONDS - started))s: a hang, not a clear reply"
    assert_contains "$out" "^< $code .*(PORT|EPRT)" "a $code reply to EPRT/PORT"
    assert_lacks "$out" '^< 150' "a transfer started"
    report_note "$(grep -Em1 "^< $code " "$out" | cut -c3-72)"
}

ftplib_active_is_refused() {
    local code=$1 out="$CHECK_DIR/ftplib.out"
    ftplib_in c1 active >"$out" 2>&1 || { cat "$out"; fail "ftplib session failed"; }
    cat "$out"
    assert_contains "$out" '^OUTCOME refused' "PORT refused"
    assert_contains "$out" "^< $code " "a $code reply"
    assert_elapsed_below "$out" 5
    report_note "$(grep -Em1 "^< $code " "$out" | cut -c3-72)"
}

# same_ip allows a PORT naming the client's own (NAT) address; nothing listens there, so
# ftpfront's connection is refused by the NAT router: the client must get a 425 at once.
port_to_own_nat_fails_fast() {
    local out="$CHECK_DIR/ftplib.out"
    ftplib_in c1 active --port-address "$NAT1_IP" >"$out" 2>&1 || { cat "$out"; fail "ftplib session failed"; }
    cat "$out"
    assert_contains "$out" '^< 200 ' "PORT to the client's own address accepted"
    assert_contains "$out" '^< 425 ' "a 425 for the transfer"
    assert_elapsed_below "$out" 15
    report_note "$(grep -Em1 '^< 425 ' "$out" | cut -c3-72)"
}

assert_elapsed_below() {
    local out=$1 limit=$2 elapsed
    elapsed=$(awk '$1 == "ELAPSED" { print $2 }' "$out")
    [[ -n "$elapsed" ]] || fail "no ELAPSED in $out"
    awk -v e="$elapsed" -v l="$limit" 'BEGIN { exit !(e < l) }' ||
        fail "took ${elapsed}s (limit ${limit}s)"
}

# --- scenario 5: port theft from another host ------------------------------------------

scenario_5_foreign_ip() {
    local server=$1
    run_check "5 foreign IP on reserved port refused" "$server" ftplib stray_cannot_take_a_reserved_port
}

stray_cannot_take_a_reserved_port() {
    local before after port outcome holder
    before=$(metric "$FOREIGN_IP_REJECTS")
    ftplib_in c1 hold-and-get a.bin "$CHECK_DIR/a.bin" --ready "$CHECK_DIR/ready" \
        --go "$CHECK_DIR/go" >"$CHECK_DIR/holder.out" 2>&1 &
    holder=$!
    wait_until 20 test -s "$CHECK_DIR/ready" || fail "the client got no passive port"
    port=$(cat "$CHECK_DIR/ready")
    echo "c1 holds passive port $port; stray ($STRAY_IP) connects to it"
    ftplib_in stray steal "$port" >"$CHECK_DIR/stray.out" 2>&1 || true
    cat "$CHECK_DIR/stray.out"
    outcome=$(awk '$1 == "OUTCOME" { print $2 }' "$CHECK_DIR/stray.out")
    touch "$CHECK_DIR/go"
    wait "$holder" || { cat "$CHECK_DIR/holder.out"; fail "the rightful client's download failed"; }
    cat "$CHECK_DIR/holder.out"
    [[ "$outcome" =~ ^(REFUSED|RESET|CLOSED)$ ]] || fail "the stray host got: $outcome"
    assert_same_content "$CHECK_DIR/a.bin" "$A_SHA"
    after=$(metric "$FOREIGN_IP_REJECTS")
    echo "foreign_ip rejections: $before -> $after"
    ((after >= before + 1)) || fail "foreign_ip counter did not go up ($before -> $after)"
    report_note "stray: $outcome; foreign_ip $before -> $after; client's download intact"
}

# --- scenario 6: two clients behind the same NAT ---------------------------------------

scenario_6_same_nat() {
    local server=$1
    run_check "6 same NAT: two pending PASV, two gets" "$server" ftplib same_nat_clients_hold_ports_at_once
    run_check "6 same NAT: concurrent gets and puts" "$server" curl same_nat_clients_transfer_at_once "$server"
}

# Both clients hold a reservation at the same time (one address: two ports), then both
# download different files at once.
same_nat_clients_hold_ports_at_once() {
    local d=$CHECK_DIR first second port_c1 port_c1b
    ftplib_in c1 hold-and-get a.bin "$d/a.bin" --ready "$d/ready-c1" --go "$d/go" --rate "$SLOW_RATE" >"$d/c1.out" 2>&1 &
    first=$!
    ftplib_in c1b hold-and-get b.bin "$d/b.bin" --ready "$d/ready-c1b" --go "$d/go" --rate "$SLOW_RATE" >"$d/c1b.out" 2>&1 &
    second=$!
    wait_until 20 test -s "$d/ready-c1" -a -s "$d/ready-c1b" || { cat "$d"/*.out; fail "no passive ports"; }
    port_c1=$(cat "$d/ready-c1")
    port_c1b=$(cat "$d/ready-c1b")
    echo "pending at once from $NAT1_IP: c1 port $port_c1, c1b port $port_c1b"
    [[ "$port_c1" != "$port_c1b" ]] || fail "two pending reservations from one address share port $port_c1"
    touch "$d/go"
    wait "$first" || { cat "$d/c1.out"; fail "c1's download failed"; }
    wait "$second" || { cat "$d/c1b.out"; fail "c1b's download failed"; }
    assert_same_content "$d/a.bin" "$A_SHA"
    assert_same_content "$d/b.bin" "$B_SHA"
    assert_passive_replies_public "$PASSIVE_FIRST" "$PASSIVE_LAST" "$d/c1.out" "$d/c1b.out"
    report_note "ports $port_c1 and $port_c1b"
}

same_nat_clients_transfer_at_once() {
    local server=$1 d=$CHECK_DIR first second
    curl_in c1 --disable-epsv --no-ftp-skip-pasv-ip --limit-rate "$SLOW_RATE" \
        -o "$d/a.bin" "$FTP_URL/a.bin" >"$d/get-c1.out" 2>&1 &
    first=$!
    curl_in c1b --disable-epsv --no-ftp-skip-pasv-ip --limit-rate "$SLOW_RATE" \
        -o "$d/b.bin" "$FTP_URL/b.bin" >"$d/get-c1b.out" 2>&1 &
    second=$!
    wait "$first" || { cat "$d/get-c1.out"; fail "c1's download failed"; }
    wait "$second" || { cat "$d/get-c1b.out"; fail "c1b's download failed"; }
    assert_same_content "$d/a.bin" "$A_SHA"
    assert_same_content "$d/b.bin" "$B_SHA"

    curl_in c1 --limit-rate "$SLOW_RATE" -T "$WORK/clients/upload-a.bin" \
        "$FTP_URL/up6-$server-c1.bin" >"$d/put-c1.out" 2>&1 &
    first=$!
    curl_in c1b --limit-rate "$SLOW_RATE" -T "$WORK/clients/upload-b.bin" \
        "$FTP_URL/up6-$server-c1b.bin" >"$d/put-c1b.out" 2>&1 &
    second=$!
    wait "$first" || { cat "$d/put-c1.out"; fail "c1's upload failed"; }
    wait "$second" || { cat "$d/put-c1b.out"; fail "c1b's upload failed"; }
    assert_same_content "$FTP_HOME/up6-$server-c1.bin" "$(sha256_of "$WORK/clients/upload-a.bin")"
    assert_same_content "$FTP_HOME/up6-$server-c1b.bin" "$(sha256_of "$WORK/clients/upload-b.bin")"
    rm -f "$FTP_HOME/up6-$server-"*.bin
    assert_passive_replies_public "$PASSIVE_FIRST" "$PASSIVE_LAST" "$d"/*.out
}

# --- scenario 7: one forwarded data port (Kubernetes) ----------------------------------

scenario_7_one_data_port() {
    local server=$1
    edge_publishes_proxy "$PASSIVE_FIRST" "$PASSIVE_FIRST"
    start_proxy "$server" "$PASSIVE_FIRST-$PASSIVE_FIRST"
    run_check "7 one port: two NATs share it, pending" "$server" ftplib two_nats_hold_the_one_port_at_once
    run_check "7 one port: two NATs download at once" "$server" curl two_nats_download_at_once
    run_check "7 one port: same NAT 425 now, ok later" "$server" ftplib+curl same_nat_waits_for_the_one_port
    edge_publishes_proxy "$PASSIVE_FIRST" "$PASSIVE_LAST"
    start_proxy "$server"
}

two_nats_hold_the_one_port_at_once() {
    local d=$CHECK_DIR first second
    ftplib_in c1 hold-and-get a.bin "$d/a.bin" --ready "$d/ready-c1" --go "$d/go" --rate "$SLOW_RATE" >"$d/c1.out" 2>&1 &
    first=$!
    ftplib_in c2 hold-and-get b.bin "$d/b.bin" --ready "$d/ready-c2" --go "$d/go" --rate "$SLOW_RATE" >"$d/c2.out" 2>&1 &
    second=$!
    wait_until 20 test -s "$d/ready-c1" -a -s "$d/ready-c2" || { cat "$d"/*.out; fail "no passive port"; }
    echo "pending at once: c1 (via $NAT1_IP) port $(cat "$d/ready-c1"), c2 (via $NAT2_IP) port $(cat "$d/ready-c2")"
    touch "$d/go"
    wait "$first" || { cat "$d/c1.out"; fail "c1's download failed"; }
    wait "$second" || { cat "$d/c2.out"; fail "c2's download failed"; }
    assert_same_content "$d/a.bin" "$A_SHA"
    assert_same_content "$d/b.bin" "$B_SHA"
    assert_passive_replies_public "$PASSIVE_FIRST" "$PASSIVE_FIRST" "$d/c1.out" "$d/c2.out"
    report_note "both on port $PASSIVE_FIRST"
}

two_nats_download_at_once() {
    local d=$CHECK_DIR first second
    curl_in c1 --disable-epsv --no-ftp-skip-pasv-ip --limit-rate "$SLOW_RATE" \
        -o "$d/a.bin" "$FTP_URL/a.bin" >"$d/c1.out" 2>&1 &
    first=$!
    curl_in c2 --disable-epsv --no-ftp-skip-pasv-ip --limit-rate "$SLOW_RATE" \
        -o "$d/b.bin" "$FTP_URL/b.bin" >"$d/c2.out" 2>&1 &
    second=$!
    wait "$first" || { cat "$d/c1.out"; fail "c1's download failed"; }
    wait "$second" || { cat "$d/c2.out"; fail "c2's download failed"; }
    assert_same_content "$d/a.bin" "$A_SHA"
    assert_same_content "$d/b.bin" "$B_SHA"
    assert_passive_replies_public "$PASSIVE_FIRST" "$PASSIVE_FIRST" "$d/c1.out" "$d/c2.out"
}

# c1 holds the one port for its NAT address; c1b (same address) asks: 425 at once (ftplib,
# then curl). Once c1's data connection is open, c1b asks again and downloads.
same_nat_waits_for_the_one_port() {
    local d=$CHECK_DIR holder status=0 code
    ftplib_in c1 hold-and-get a.bin "$d/a.bin" --ready "$d/ready" --go "$d/go" \
        --opened "$d/opened" --rate "$SLOW_RATE" >"$d/c1.out" 2>&1 &
    holder=$!
    wait_until 20 test -s "$d/ready" || { cat "$d/c1.out"; fail "c1 got no passive port"; }

    ftplib_in c1b ask-passive >"$d/ask.out" 2>&1 || { cat "$d/ask.out"; fail "c1b's session failed"; }
    cat "$d/ask.out"
    assert_contains "$d/ask.out" '^< 425 ' "c1b's PASV while c1's reservation is pending"
    assert_elapsed_below "$d/ask.out" 2
    curl_in c1b --disable-epsv -o "$d/b-early.bin" "$FTP_URL/b.bin" >"$d/curl-early.out" 2>&1 || status=$?
    cat "$d/curl-early.out"
    ((status != 0)) || fail "curl from c1b downloaded while c1's reservation was pending"
    assert_contains "$d/curl-early.out" '^< 425 ' "curl's PASV while c1's reservation is pending"

    touch "$d/go"
    wait_until 20 test -s "$d/opened" || { cat "$d/c1.out"; fail "c1's transfer did not start"; }
    curl_in c1b --disable-epsv --no-ftp-skip-pasv-ip -o "$d/b.bin" "$FTP_URL/b.bin" >"$d/curl-again.out" 2>&1 ||
        { cat "$d/curl-again.out"; fail "c1b's second attempt failed"; }
    local overlap="after"
    if kill -0 "$holder" 2>/dev/null; then overlap="while c1 still downloaded"; fi
    wait "$holder" || { cat "$d/c1.out"; fail "c1's download failed"; }
    assert_same_content "$d/a.bin" "$A_SHA"
    assert_same_content "$d/b.bin" "$B_SHA"
    assert_passive_replies_public "$PASSIVE_FIRST" "$PASSIVE_FIRST" "$d/c1.out" "$d/curl-again.out"
    code=$(grep -Em1 '^< 425 ' "$d/ask.out" | cut -c3-60)
    report_note "$code... in $(awk '$1 == "ELAPSED" { print $2 }' "$d/ask.out")s; retry ok $overlap"
}

# --- scenario 8: FTPS without ftpfront ----------------------------------------------------

scenario_8_ftps_without_ftpfront() {
    edge_publishes_server "$FTPS_SERVER_IP" "$FTPS_SERVER_PORT"
    local ns
    for ns in c1 c2; do
        run_ftps_check "curl explicit|8|$ns" "8 FTPS no proxy ($ns): LIST+RETR fail" \
            "$FTPS_SERVER" curl ftps_client_logs_in_but_cannot_list_or_get "$ns"
    done
}

# TLS and the login work (the server's certificate is valid for the public address too), but
# the encrypted 227/229 name the server's private address and an unforwarded port.
ftps_client_logs_in_but_cannot_list_or_get() {
    local ns=$1 list_status=0 get_status=0
    curl_ftps_in "$ns" "ftp://$PUBLIC_IP/" >"$CHECK_DIR/list.out" 2>&1 || list_status=$?
    curl_ftps_in "$ns" --disable-epsv --no-ftp-skip-pasv-ip -o "$CHECK_DIR/ftps.bin" \
        "ftp://$PUBLIC_IP/ftps.bin" >"$CHECK_DIR/get.out" 2>&1 || get_status=$?
    cat "$CHECK_DIR/list.out" "$CHECK_DIR/get.out"
    assert_ftps_conversation "$CHECK_DIR/list.out" explicit
    assert_ftps_conversation "$CHECK_DIR/get.out" explicit
    ((list_status != 0)) || fail "curl listed the directory over FTPS without ftpfront"
    assert_lacks "$CHECK_DIR/list.out" 'ftps\.bin' "a listing reached the client"
    ((get_status != 0)) || fail "curl downloaded over FTPS without ftpfront"
    if [[ -f "$CHECK_DIR/ftps.bin" ]] && [[ "$(sha256_of "$CHECK_DIR/ftps.bin")" == "$FTPS_SHA" ]]; then
        fail "the file arrived without ftpfront"
    fi
    report_note "exit $list_status/$get_status: $(first_error "$CHECK_DIR/list.out")"
}

# --- scenario 9: FTPS through ftpfront ----------------------------------------------------

scenario_9_ftps_through_ftpfront() {
    local backend=$1 entry client mode ns
    for entry in "${FTPS_CLIENTS[@]}"; do
        read -r client mode <<<"$entry"
        for ns in c1 c2; do
            run_ftps_check "$entry|9 $backend|$ns" "9 $mode via $ns: 20M get+put, 227s" \
                "$backend" "$client" ftps_transfers_through_ftpfront "$client" "$mode" "$ns"
        done
    done
}

ftps_transfers_through_ftpfront() {
    local client=$1 mode=$2 ns=$3 get_out="$CHECK_DIR/get.out" put_out="$CHECK_DIR/put.out" remote checked
    remote="up-ftps-$client-$mode-$ns.bin"
    ftps_get "$client" "$mode" "$ns" ftps.bin "$CHECK_DIR/ftps.bin" >"$get_out" ||
        { cat "$get_out"; fail "$client: download over $mode FTPS failed"; }
    ftps_put "$client" "$mode" "$ns" "$WORK/clients/upload-ftps.bin" "$remote" >"$put_out" ||
        { cat "$get_out" "$put_out"; fail "$client: upload over $mode FTPS failed"; }
    cat "$get_out" "$put_out"
    assert_ftps_conversation "$get_out" "$mode"
    assert_ftps_conversation "$put_out" "$mode"
    assert_same_content "$CHECK_DIR/ftps.bin" "$FTPS_SHA"
    assert_same_content "$FTP_HOME/$remote" "$FTPS_UPLOAD_SHA"
    rm -f "$CHECK_DIR/ftps.bin" "$FTP_HOME/$remote"
    checked=$(assert_passive_replies_public "$PASSIVE_FIRST" "$PASSIVE_LAST" "$get_out" "$put_out")
    report_note "get $(speed_in "$get_out"), put $(speed_in "$put_out") MiB/s; $checked"
}

# --- the run ----------------------------------------------------------------------------

teardown() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    stop_started_processes
    remove_topology
    remove_ftp_user
    if [[ -n "$WORK" && "${E2E_KEEP:-0}" != 1 ]]; then
        rm -rf "$WORK"
    elif [[ -n "$WORK" ]]; then
        say "e2e: kept $WORK"
    fi
    exit "$status"
}

remove_leftovers() {
    if ip netns list 2>/dev/null | grep -q "^$E2E_PREFIX-" || getent passwd "$FTP_USER" >/dev/null; then
        say "e2e: removing what a killed run left behind (namespaces $E2E_PREFIX-*, user $FTP_USER)"
    fi
    remove_topology
    remove_ftp_user
    rm -rf /tmp/"$E2E_PREFIX"-e2e.*
}

main() {
    [[ "$(id -u)" == 0 ]] || die "needs root (network namespaces, iptables, a system user)"
    find_clients
    find_servers
    find_proxy
    if ftps_wanted; then find_openssl; fi
    take_lock
    remove_leftovers
    trap teardown EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    make_workdir

    step "building the network (namespaces ffe-*)"
    build_topology
    step "creating the FTP user $FTP_USER, sample files, starting the servers"
    create_ftp_user
    create_sample_files
    start_ftp_servers
    if ftps_wanted; then
        step "FTPS: a test CA and certificates (openssl), $FTPS_SERVER"
        make_certificates
        create_ftps_files
        start_ftps_vsftpd
    fi

    local server
    for server in ${E2E_SERVERS:-${SERVERS[*]}}; do
        [[ -n "${SERVER_IP[$server]:-}" ]] || die "unknown server $server"
        step "$server: 1 without ftpfront (edge forwards 21 to ${SERVER_IP[$server]})"
        scenario_1_without_ftpfront "$server"

        step "$server: ftpfront on $PROXY_IP, edge forwards 21 and $PASSIVE_FIRST-$PASSIVE_LAST"
        edge_publishes_proxy "$PASSIVE_FIRST" "$PASSIVE_LAST"
        start_proxy "$server"
        step "$server: 2 + 3 every client through ftpfront"
        scenario_2_and_3_through_ftpfront "$server"
        step "$server: 4 active mode from behind a NAT"
        scenario_4_active_mode "$server"
        step "$server: 5 a foreign host on a reserved passive port"
        scenario_5_foreign_ip "$server"
        step "$server: 6 two clients behind the same NAT"
        scenario_6_same_nat "$server"
        step "$server: 7 one forwarded data port"
        scenario_7_one_data_port "$server"
        stop_proxy
    done

    if ftps_wanted; then
        step "FTPS: 8 without ftpfront (edge forwards 21 to $FTPS_SERVER $FTPS_SERVER_IP:$FTPS_SERVER_PORT)"
        scenario_8_ftps_without_ftpfront
        edge_publishes_proxy "$PASSIVE_FIRST" "$PASSIVE_LAST" "$IMPLICIT_PORT"
        for server in vsftpd "$FTPS_SERVER"; do
            step "FTPS: 9 through ftpfront (explicit on 21, implicit on $IMPLICIT_PORT) to $server"
            start_ftps_proxy "$server"
            scenario_9_ftps_through_ftpfront "$server"
        done
        stop_proxy
    fi

    print_matrix "${E2E_SERVERS:-${SERVERS[*]}}" "${CLIENTS[*]}"
    if ftps_wanted; then print_ftps_matrix; fi
    print_summary
    ((FAILURES == 0))
}

main "$@"
