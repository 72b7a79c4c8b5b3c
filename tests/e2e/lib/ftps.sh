# shellcheck shell=bash
# FTPS in the e2e harness (issue 4): the certificates, the FTPS vsftpd in the backend LAN,
# ftpfront with TLS, and the FTPS clients. Sourced by tests/e2e/run.sh (scenarios 8 and 9).
#
# - A test CA signs two server certificates (ECDSA P-256, not CAs themselves: rustls refuses
#   a CA certificate as an end entity):
#     edge.pem     IP 203.0.113.10, ftpfront's certificate for the clients, who verify it;
#     backend.pem  IP 10.20.0.2 (ftpfront verifies it with tls_ca_file) and 203.0.113.10 (so
#                  that in scenario 8, where the edge publishes the server itself, TLS and the
#                  login succeed and only the NAT problem is left).
# - vsftpd-tls: a second vsftpd on 10.20.0.2:2121, explicit FTPS only, as strict as vsftpd's
#   defaults go (require_ssl_reuse=YES, TLS forced on logins and data).
# - ftpfront: tls.mode = "optional", explicit FTPS on 21, implicit FTPS on 990 (the edge
#   forwards 990 too for these rows), one backend: the plain vsftpd or vsftpd-tls.

FTPS_SERVER=vsftpd-tls
FTPS_SERVER_IP=${SERVER_IP[vsftpd]} # the same host as the plain vsftpd, another port
FTPS_SERVER_PORT=2121
FTPS_SERVER_PASV_RANGE=40050-40099
IMPLICIT_PORT=990
FTPS_FILE_MIB=20
FTPS_CLIENTS=("curl explicit" "curl implicit" "lftp explicit" "ftplib explicit" "ftplib implicit")
EC_KEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes) # openssl req: a new P-256 key
TLS_DIR="" # $WORK/tls: ca.pem, edge.{pem,key}, backend.{pem,key}

ftps_wanted() { [[ ${E2E_FTPS:-1} != 0 ]]; }

find_openssl() {
    command -v openssl >/dev/null || die "openssl not found (run scripts/install-test-deps.sh)"
}

# --- certificates -----------------------------------------------------------------------

make_certificates() {
    TLS_DIR=$WORK/tls
    mkdir -p "$TLS_DIR"
    openssl req -x509 "${EC_KEY[@]}" -days 2 -subj "/CN=ftpfront e2e test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>"$TLS_DIR/openssl.log"
    sign_server_certificate edge "$PUBLIC_IP" "IP:$PUBLIC_IP"
    sign_server_certificate backend "$FTPS_SERVER_IP" "IP:$FTPS_SERVER_IP,IP:$PUBLIC_IP"
    chmod 600 "$TLS_DIR"/*.key
}

# sign_server_certificate NAME CN SANS: NAME.key and NAME.pem, a server (end-entity)
# certificate for SANS signed by the test CA.
sign_server_certificate() {
    local name=$1 cn=$2 sans=$3
    openssl req -new "${EC_KEY[@]}" -subj "/CN=$cn" -keyout "$TLS_DIR/$name.key" \
        -out "$TLS_DIR/$name.csr" 2>>"$TLS_DIR/openssl.log"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=$sans" >"$TLS_DIR/$name.ext"
    openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
        -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -days 2 \
        -extfile "$TLS_DIR/$name.ext" -out "$TLS_DIR/$name.pem" 2>>"$TLS_DIR/openssl.log"
    openssl verify -CAfile "$TLS_DIR/ca.pem" "$TLS_DIR/$name.pem" >/dev/null ||
        die "the $name certificate does not verify against the test CA"
}

# --- the FTPS vsftpd ----------------------------------------------------------------------

start_ftps_vsftpd() {
    local dir
    dir=$(server_dir "$FTPS_SERVER")
    write_vsftpd_config "$dir" "$FTPS_SERVER_IP" "$FTPS_SERVER_PORT" "$FTPS_SERVER_PASV_RANGE"
    # vsftpd 3.0.3's default ssl_ciphers=DES-CBC3-SHA is refused by OpenSSL 3 and rustls: HIGH.
    cat >>"$dir/vsftpd.conf" <<CONF
ssl_enable=YES
rsa_cert_file=$TLS_DIR/backend.pem
rsa_private_key_file=$TLS_DIR/backend.key
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=YES
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=YES
ssl_ciphers=HIGH
debug_ssl=YES
CONF
    spawn_in backend "$VSFTPD_BIN" "$dir/vsftpd.conf" >"$dir/stderr.log" 2>&1
    wait_until 10 ftp_greets "$FTPS_SERVER_IP" "$FTPS_SERVER_PORT" || {
        show_server_logs "$FTPS_SERVER"
        die "$FTPS_SERVER did not greet on $FTPS_SERVER_IP:$FTPS_SERVER_PORT"
    }
    say "  $FTPS_SERVER listening on $FTPS_SERVER_IP:$FTPS_SERVER_PORT (explicit FTPS only), passive $FTPS_SERVER_PASV_RANGE"
}

# The files of the FTPS rows: one to download (served by both vsftpds), one to upload.
create_ftps_files() {
    head -c "${FTPS_FILE_MIB}M" /dev/urandom >"$FTP_HOME/ftps.bin"
    chown "$FTP_USER:" "$FTP_HOME/ftps.bin"
    head -c "${FTPS_FILE_MIB}M" /dev/urandom >"$WORK/clients/upload-ftps.bin"
    FTPS_SHA=$(sha256_of "$FTP_HOME/ftps.bin")
    FTPS_UPLOAD_SHA=$(sha256_of "$WORK/clients/upload-ftps.bin")
}

# --- ftpfront with TLS --------------------------------------------------------------------

# start_ftps_proxy BACKEND: ftpfront with FTPS for clients (explicit on 21, implicit on 990)
# in front of the plain vsftpd (BACKEND vsftpd) or the FTPS one (vsftpd-tls, verified with
# the test CA).
start_ftps_proxy() {
    local backend=$1 backend_conf
    if [[ $backend == "$FTPS_SERVER" ]]; then
        backend_conf="address = \"$FTPS_SERVER_IP:$FTPS_SERVER_PORT\"
tls = \"explicit\"
tls_verify = true
tls_ca_file = \"$TLS_DIR/ca.pem\""
    else
        backend_conf="address = \"${SERVER_IP[$backend]}:21\""
    fi
    new_proxy_config "ftps-$backend"
    cat >"$PROXY_CONFIG" <<CONF
# generated by tests/e2e/run.sh
[listen]
control = "$PROXY_IP:21"
implicit_tls = "$PROXY_IP:$IMPLICIT_PORT"

[passive]
ports = "$PASSIVE_FIRST-$PASSIVE_LAST"
public_address = "$PUBLIC_IP"

[tls]
mode = "optional"
cert = "$TLS_DIR/edge.pem"
key = "$TLS_DIR/edge.key"

[[backends]]
name = "$backend"
$backend_conf
connect_timeout = "5s"

[metrics]
listen = "$PROXY_IP:9477"

[limits]
data_accept_timeout = "10s"
CONF
    launch_proxy
}

# --- the FTPS clients ---------------------------------------------------------------------
# ftps_OP CLIENT MODE NS ... >OUT, MODE explicit (AUTH TLS on 21) or implicit (TLS first, on
# 990): each client verifies ftpfront's certificate against the test CA, protects the data
# connections (PROT P) and, like client_get/client_put, trusts the address in a 227 reply.

ftps_get() {
    local client=$1 mode=$2 ns=$3 remote=$4 local_file=$5
    case $client in
        curl) curl_ftps_in "$ns" --disable-epsv --no-ftp-skip-pasv-ip -o "$local_file" \
            -w 'SPEED %{speed_download}\n' "$(ftps_url "$mode")/$remote" 2>&1 | bytes_to_mib ;;
        lftp) timed_mib "$local_file" lftps_in "$ns" "get $remote -o $local_file" 2>&1 ;;
        ftplib) ftplib_ftps_in "$mode" "$ns" --passive PASV get "$remote" "$local_file" 2>&1 ;;
    esac
}

ftps_put() {
    local client=$1 mode=$2 ns=$3 local_file=$4 remote=$5
    case $client in
        curl) curl_ftps_in "$ns" --disable-epsv --no-ftp-skip-pasv-ip -T "$local_file" \
            -w 'SPEED %{speed_upload}\n' "$(ftps_url "$mode")/$remote" 2>&1 | bytes_to_mib ;;
        lftp) timed_mib "$local_file" lftps_in "$ns" "put $local_file -o $remote" 2>&1 ;;
        ftplib) ftplib_ftps_in "$mode" "$ns" --passive EPSV put "$local_file" "$remote" 2>&1 ;;
    esac
}

# curl: TLS required and verified; ftp:// URLs are explicit FTPS (AUTH), ftps:// implicit (990).
curl_ftps_in() {
    local ns=$1
    shift
    curl_in "$ns" --ssl-reqd --cacert "$TLS_DIR/ca.pem" "$@"
}
ftps_url() { if [[ $1 == implicit ]]; then echo "ftps://$PUBLIC_IP"; else echo "ftp://$PUBLIC_IP"; fi; }

# lftps_in NS "COMMANDS": lftp_in with explicit FTPS forced on control and data.
lftps_in() {
    LFTP_TLS="set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file $TLS_DIR/ca.pem;" \
        lftp_in "$@"
}

# ftplib_ftps_in MODE NS ARGS...: ftp_client.py with FTP_TLS (explicit) or its implicit
# subclass on port 990; prot_p() after the login.
ftplib_ftps_in() {
    local mode=$1 ns=$2 port=21
    shift 2
    if [[ $mode == implicit ]]; then port=$IMPLICIT_PORT; fi
    ftplib_in "$ns" --port "$port" --tls "$mode" --ca "$TLS_DIR/ca.pem" "$@"
}

# The conversation shows TLS on the control connection (explicit: AUTH TLS/SSL answered
# 234; implicit: no AUTH, a handshake before the 220), PROT P answered 200, and the login.
assert_ftps_conversation() {
    local out=$1 mode=$2 replies
    if [[ $mode == explicit ]]; then
        assert_contains "$out" '^(> |---> )AUTH (TLS|SSL)' "the client sent AUTH TLS/SSL"
        assert_contains "$out" '^(<|<---) 234 ' "AUTH accepted (234)"
    else
        assert_lacks "$out" '^(> |---> )AUTH ' "AUTH on the implicit FTPS port"
        # curl -v: "* SSL connection using TLSv1.3 / ..."; ftp_client.py: "TLS TLSv1.3 (implicit)".
        awk '/^(\* SSL connection using TLS|TLS TLSv)/ { tls = 1; exit } /^(<|<---) 220[ -]/ { exit }
            END { exit !tls }' "$out" ||
            fail "no TLS handshake before the 220 greeting on the implicit FTPS port"
    fi
    replies=$(replies_to "$out" "PROT P")
    [[ -n "$replies" ]] || fail "no reply to PROT P in $out"
    if grep -vEq '^(<|<---) 200 ' <<<"$replies"; then fail "PROT P refused: $replies"; fi
    assert_logged_in "$out"
}

# replies_to FILE COMMAND: the reply lines (code first) answering each COMMAND in FILE.
replies_to() {
    awk -v cmd="$2" '
        /^(> |---> )/ { sub(/^(> |---> )/, ""); sub(/\r$/, ""); waiting = ($0 == cmd); next }
        waiting && /^(<|<---) [0-9][0-9][0-9][ -]/ { print; waiting = 0 }' "$1"
}

# --- the FTPS matrix ----------------------------------------------------------------------

declare -A FTPS_CELL=() # "client mode|column|nat" -> pass/FAIL

# run_ftps_check "CLIENT MODE|COLUMN|NAT" run_check-ARGS...: run_check, and the result goes
# into that cell of the FTPS matrix.
run_ftps_check() {
    local cell=$1 result
    shift
    run_check "$@"
    IFS='|' read -r _ _ _ result _ <<<"${RESULTS[-1]}"
    FTPS_CELL[$cell]=$result
}

# One row per client and client leg (explicit/implicit), one column per NAT under each of:
# 8 (no ftpfront, straight to vsftpd-tls), 9 via ftpfront to the plain vsftpd, 9 via
# ftpfront to vsftpd-tls.
print_ftps_matrix() {
    local columns=("8" "9 vsftpd" "9 $FTPS_SERVER") entry client mode column
    say ""
    printf '%-16s' "FTPS"
    for column in "${columns[@]}"; do printf ' %-15s' "$column"; done
    printf '\n%-16s' "client  leg"
    for column in "${columns[@]}"; do printf ' %-7s%-8s' c1 c2; done
    printf '\n'
    for entry in "${FTPS_CLIENTS[@]}"; do
        read -r client mode <<<"$entry"
        printf '%-7s %-8s' "$client" "$mode"
        for column in "${columns[@]}"; do
            printf ' %-7s%-8s' "${FTPS_CELL["$entry|$column|c1"]:--}" "${FTPS_CELL["$entry|$column|c2"]:--}"
        done
        printf '\n'
    done
    say "(8 no proxy, edge forwards 21 to $FTPS_SERVER: FTPS login ok, LIST/RETR fail | 9 through"
    say " ftpfront, client leg as named, backend leg plain (vsftpd) or explicit FTPS ($FTPS_SERVER):"
    say " ${FTPS_FILE_MIB} MiB get+put, SHA-256 equal, every 227 names $PUBLIC_IP; - = not run)"
}
