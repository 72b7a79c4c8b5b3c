# shellcheck shell=bash
# The real clients (curl, lftp, Python ftplib), run inside a client namespace, and the
# assertions on what they saw. Sourced by tests/e2e/run.sh.
#
# Every client writes its whole conversation to an output file: curl -v ("< 227 ..."),
# lftp -d ("<--- 227 ..."), ftp_client.py ("< 227 ..."). The assertions read those.

CLIENTS=(curl lftp ftplib)
FTP_URL="ftp://$PUBLIC_IP"

find_clients() {
    local prog
    for prog in curl lftp python3 ip iptables; do
        command -v "$prog" >/dev/null || die "$prog not found (run scripts/install-test-deps.sh)"
    done
}

# curl_in NS ARGS...: verbose (the replies are in its output), never longer than 2 minutes.
curl_in() {
    local ns=$1
    shift
    in_ns "$ns" timeout 150 curl --silent --show-error --verbose --connect-timeout 5 \
        --max-time 120 --user "$FTP_USER:$FTP_PASS" "$@"
}

# lftp_in NS "COMMANDS": lftp with its protocol debug output (on stdout), PASV (not EPSV),
# few retries; plain FTP unless LFTP_TLS holds FTPS settings (lib/ftps.sh: lftps_in).
lftp_in() {
    local ns=$1 commands=$2
    # One line: lftp ignores the site argument when -e starts with a newline.
    local settings="set cmd:fail-exit yes; ${LFTP_TLS:-set ftp:ssl-allow no;} set net:max-retries 2;"
    settings+=" set net:timeout 10; set net:reconnect-interval-base 1;"
    settings+=" set net:reconnect-interval-max 2; set ftp:passive-mode on;"
    settings+=" set ftp:prefer-epsv no; set xfer:clobber on;"
    # lftp -d prints the password: mask it (the output may end up in a failure report).
    in_ns "$ns" timeout 150 lftp -d -u "$FTP_USER,$FTP_PASS" -e "$settings $commands; quit" \
        "$PUBLIC_IP" 2>&1 | sed "s/$FTP_PASS/****/g"
}

# ftplib_in NS [--passive PASV|EPSV] SUBCOMMAND ARGS...: the e2e form of tests/clients/ftp_client.py.
ftplib_in() {
    local ns=$1
    shift
    in_ns "$ns" timeout 150 python3 "$E2E_DIR/../clients/ftp_client.py" e2e "$PUBLIC_IP" "$FTP_USER" "$FTP_PASS" "$@"
}

# --- one operation, any client -------------------------------------------------------
# client_OP CLIENT NS ... >OUT: the conversation goes to stdout; transfers end with a
# "SPEED <MiB/s>" line.

client_list() {
    local client=$1 ns=$2
    case $client in
        curl) curl_in "$ns" "$FTP_URL/" 2>&1 ;; # EPSV first: curl's default
        lftp) lftp_in "$ns" "ls" 2>&1 ;;
        ftplib) ftplib_in "$ns" --passive PASV list 2>&1 ;;
    esac
}

client_mlsd() {
    local client=$1 ns=$2
    case $client in
        curl) curl_in "$ns" -X MLSD "$FTP_URL/" 2>&1 ;;
        lftp) lftp_in "$ns" "set ftp:use-mlsd yes; cls -l" 2>&1 ;;
        ftplib) ftplib_in "$ns" --passive EPSV mlsd 2>&1 ;;
    esac
}

client_get() {
    local client=$1 ns=$2 remote=$3 local_file=$4
    case $client in
        # Trusting the address in the 227 reply: it must be the public one.
        curl) curl_in "$ns" --disable-epsv --no-ftp-skip-pasv-ip -o "$local_file" \
            -w 'SPEED %{speed_download}\n' "$FTP_URL/$remote" 2>&1 | bytes_to_mib ;;
        lftp) timed_mib "$local_file" lftp_in "$ns" "get $remote -o $local_file" 2>&1 ;;
        ftplib) ftplib_in "$ns" --passive PASV get "$remote" "$local_file" 2>&1 ;;
    esac
}

client_put() {
    local client=$1 ns=$2 local_file=$3 remote=$4
    case $client in
        curl) curl_in "$ns" --disable-epsv --no-ftp-skip-pasv-ip -T "$local_file" \
            -w 'SPEED %{speed_upload}\n' "$FTP_URL/$remote" 2>&1 | bytes_to_mib ;;
        lftp) timed_mib "$local_file" lftp_in "$ns" "put $local_file -o $remote" 2>&1 ;;
        ftplib) ftplib_in "$ns" --passive EPSV put "$local_file" "$remote" 2>&1 ;;
    esac
}

# curl reports bytes/s: turn its SPEED line into MiB/s.
bytes_to_mib() {
    awk '$1 == "SPEED" { printf "SPEED %.1f\n", $2 / 1048576; next } { print }'
}

# timed_mib FILE COMMAND...: runs COMMAND, then prints "SPEED" for FILE's size over its time.
timed_mib() {
    local file=$1 started ended status=0
    shift
    started=$(date +%s.%N)
    "$@" || status=$?
    ended=$(date +%s.%N)
    if [[ -f "$file" ]]; then
        awk -v size="$(stat -c %s "$file")" -v s="$started" -v e="$ended" \
            'BEGIN { d = e - s; if (d <= 0) d = 1e-6; printf "SPEED %.1f\n", size / 1048576 / d }'
    fi
    return "$status"
}

speed_in() { awk '$1 == "SPEED" { v = $2 } END { print v }' "$1"; }

# --- assertions -------------------------------------------------------------------------

assert_same_content() {
    local file=$1 expected=$2 actual
    [[ -f "$file" ]] || fail "$file does not exist"
    actual=$(sha256_of "$file")
    [[ "$actual" == "$expected" ]] || fail "$file: SHA-256 $actual, expected $expected ($(stat -c %s "$file") bytes)"
}

assert_contains() {
    local file=$1 pattern=$2 what=$3
    grep -Eq -- "$pattern" "$file" || fail "$what: no line matching /$pattern/ in $file"
}

assert_lacks() {
    local file=$1 pattern=$2 what=$3
    if grep -Eq -- "$pattern" "$file"; then
        fail "$what: $(grep -Em1 -- "$pattern" "$file")"
    fi
}

# The client logged in: a 230 reply in its conversation.
assert_logged_in() { assert_contains "$1" '^(<|<---) 230[ -]' "login (230)"; }

# Every 227 in the files names the public address and a port of FIRST-LAST, every 229 a
# port of FIRST-LAST, and there is at least one 227. Prints how many it checked.
assert_passive_replies_public() {
    local first=$1 last=$2
    shift 2
    local replies line numbers port count=0
    replies=$(cat "$@" | grep -E '^(<|<---) 22[79] ' || true)
    grep -q '227 ' <<<"$replies" || fail "no 227 reply in $*"
    while IFS= read -r line; do
        if [[ $line =~ 227\ .*\(([0-9]+),([0-9]+),([0-9]+),([0-9]+),([0-9]+),([0-9]+)\) ]]; then
            numbers=("${BASH_REMATCH[@]:1}")
            [[ "${numbers[0]}.${numbers[1]}.${numbers[2]}.${numbers[3]}" == "$PUBLIC_IP" ]] ||
                fail "227 names another address than $PUBLIC_IP: $line"
            port=$((numbers[4] * 256 + numbers[5]))
        elif [[ $line =~ 229\ .*\(\|\|\|([0-9]+)\|\) ]]; then
            port=${BASH_REMATCH[1]}
        else
            fail "unparsable passive reply: $line"
        fi
        ((port >= first && port <= last)) || fail "passive port $port not in $first-$last: $line"
        count=$((count + 1))
    done <<<"$replies"
    echo "$count passive replies checked"
}

# The port announced by the last 227/229 in a file.
announced_port() {
    local line
    line=$(grep -E '^(<|<---) 22[79] ' "$1" | tail -n 1)
    if [[ $line =~ \(([0-9]+),([0-9]+),([0-9]+),([0-9]+),([0-9]+),([0-9]+)\) ]]; then
        echo $((BASH_REMATCH[5] * 256 + BASH_REMATCH[6]))
    elif [[ $line =~ \(\|\|\|([0-9]+)\|\) ]]; then
        echo "${BASH_REMATCH[1]}"
    fi
}
