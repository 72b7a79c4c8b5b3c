# shellcheck shell=bash
# The real FTP servers in the backend namespace, each on its own private address with its
# own passive range, all serving the home directory of one system user created for the run.
# Sourced by tests/e2e/run.sh.

SERVERS=(vsftpd pure-ftpd proftpd)
declare -A SERVER_IP=([vsftpd]=10.20.0.2 [pure-ftpd]=10.20.0.3 [proftpd]=10.20.0.4)
declare -A SERVER_PASV_RANGE=([vsftpd]=40000-40049 [pure-ftpd]=41000-41049 [proftpd]=42000-42049)
declare -A SERVER_HAS_MLSD=([vsftpd]=no [pure-ftpd]=yes [proftpd]=yes) # vsftpd 3.0.3: LIST only

FTP_USER=$E2E_PREFIX-e2e
FTP_PASS=""
FTP_HOME=""

find_servers() {
    VSFTPD_BIN=$(find_program vsftpd) || die "vsftpd not found (run scripts/install-test-deps.sh)"
    PUREFTPD_BIN=$(find_program pure-ftpd pure-ftpd) || die "pure-ftpd not found (run scripts/install-test-deps.sh)"
    PROFTPD_BIN=$(find_program proftpd proftpd-core) || die "proftpd not found (run scripts/install-test-deps.sh)"
}

# The login every server accepts: a system user with a password and a home directory, so
# all three servers authenticate the same way (PAM / shadow), as on a real machine.
create_ftp_user() {
    FTP_HOME=$WORK/home
    FTP_PASS="e2e$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    useradd --no-create-home --home-dir "$FTP_HOME" --shell /bin/bash \
        --comment "$E2E_USER_COMMENT" "$FTP_USER"
    printf '%s:%s\n' "$FTP_USER" "$FTP_PASS" | chpasswd
    mkdir -p "$FTP_HOME"
    chown "$FTP_USER:" "$FTP_HOME"
}

# Only ever removes the user this harness creates (recognised by its comment).
remove_ftp_user() {
    if [[ "$(getent passwd "$FTP_USER" | cut -d: -f5)" == "$E2E_USER_COMMENT" ]]; then
        userdel "$FTP_USER" 2>/dev/null || true
    fi
}

# Files every server serves: a 50 MiB file, and two different 16 MiB files for the
# scenarios that download at the same time.
create_sample_files() {
    head -c 50M /dev/urandom >"$FTP_HOME/big.bin"
    head -c 16M /dev/urandom >"$FTP_HOME/a.bin"
    head -c 16M /dev/urandom >"$FTP_HOME/b.bin"
    chown "$FTP_USER:" "$FTP_HOME"/*.bin
    # What the clients upload (they read it from the shared file system).
    head -c 50M /dev/urandom >"$WORK/clients/upload-50M.bin"
    head -c 16M /dev/urandom >"$WORK/clients/upload-a.bin"
    head -c 16M /dev/urandom >"$WORK/clients/upload-b.bin"
    BIG_SHA=$(sha256_of "$FTP_HOME/big.bin")
    A_SHA=$(sha256_of "$FTP_HOME/a.bin")
    B_SHA=$(sha256_of "$FTP_HOME/b.bin")
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

server_dir() { printf '%s\n' "$WORK/servers/$1"; }

start_vsftpd() {
    local dir
    dir=$(server_dir vsftpd)
    write_vsftpd_config "$dir" "${SERVER_IP[vsftpd]}" 21 "${SERVER_PASV_RANGE[vsftpd]}"
    spawn_in backend "$VSFTPD_BIN" "$dir/vsftpd.conf" >"$dir/stderr.log" 2>&1
}

# write_vsftpd_config DIR IP PORT RANGE: a vsftpd for the FTP user on IP:PORT with passive
# ports RANGE, in DIR (config, logs). The FTPS instance (lib/ftps.sh) appends its TLS lines.
write_vsftpd_config() {
    local dir=$1 ip=$2 port=$3 range=$4
    mkdir -p "$dir/empty"
    chmod 755 "$dir/empty"
    # Normal privileged mode (a session runs as the user, chrooted to the home): local logins
    # do not work with run_as_launching_user=YES ("500 OOPS: bad state in vsf_one_process_login").
    cat >"$dir/vsftpd.conf" <<CONF
listen=YES
listen_ipv6=NO
listen_address=$ip
listen_port=$port
background=NO
seccomp_sandbox=NO
secure_chroot_dir=$dir/empty
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
chroot_local_user=YES
allow_writeable_chroot=YES
pam_service_name=vsftpd
connect_from_port_20=NO
pasv_enable=YES
pasv_address=$ip
pasv_addr_resolve=NO
pasv_min_port=${range%-*}
pasv_max_port=${range#*-}
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file=$dir/vsftpd.log
idle_session_timeout=300
data_connection_timeout=60
CONF
    chmod 600 "$dir/vsftpd.conf" # vsftpd refuses a config others can write
}

start_pure_ftpd() {
    local dir ip=${SERVER_IP[pure-ftpd]} range=${SERVER_PASV_RANGE[pure-ftpd]}
    dir=$(server_dir pure-ftpd)
    mkdir -p "$dir"
    # -l unix: system users; -E: no anonymous; -A: chroot to the home; -H: no DNS;
    # -P/-p: passive address and range; -C/-c: ftpfront's sessions all come from one address.
    spawn_in backend "$PUREFTPD_BIN" -S "$ip,21" -4 -l unix -E -A -H \
        -P "$ip" -p "${range%-*}:${range#*-}" -c 50 -C 50 \
        -O "clf:$dir/transfer.log" >"$dir/stderr.log" 2>&1
}

start_proftpd() {
    local dir ip=${SERVER_IP[proftpd]} range=${SERVER_PASV_RANGE[proftpd]}
    dir=$(server_dir proftpd)
    mkdir -p "$dir"
    cat >"$dir/proftpd.conf" <<CONF
ServerName "ftpfront e2e proftpd"
ServerType standalone
DefaultServer on
UseIPv6 off
DefaultAddress $ip
SocketBindTight on
Port 21
User nobody
Group nogroup
PidFile $dir/proftpd.pid
ScoreboardFile $dir/proftpd.scoreboard
DelayTable none
WtmpLog off
UseReverseDNS off
AuthPAM off
AuthOrder mod_auth_unix.c
RequireValidShell off
DefaultRoot ~
PassivePorts ${range%-*} ${range#*-}
MasqueradeAddress $ip
AllowOverwrite on
Umask 022
MaxInstances 50
TransferLog $dir/xfer.log
CONF
    # -n: foreground, logging to stderr.
    spawn_in backend "$PROFTPD_BIN" -n -c "$dir/proftpd.conf" >"$dir/stderr.log" 2>&1
}

# ftp_greets IP [PORT]: an FTP server there sends its 220.
ftp_greets() {
    in_ns backend bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        read -r -t 2 line <&3 || exit 1
        printf "QUIT\r\n" >&3
        [[ $line == 220* ]]' _ "$1" "${2:-21}"
}

start_ftp_servers() {
    start_vsftpd
    start_pure_ftpd
    start_proftpd
    local server
    for server in "${SERVERS[@]}"; do
        wait_until 10 ftp_greets "${SERVER_IP[$server]}" || {
            show_server_logs "$server"
            die "$server did not greet on ${SERVER_IP[$server]}:21"
        }
        say "  $server listening on ${SERVER_IP[$server]}:21, passive ${SERVER_PASV_RANGE[$server]}"
    done
}

show_server_logs() {
    local dir f
    dir=$(server_dir "$1")
    for f in "$dir"/*.log; do
        [[ -s "$f" ]] || continue
        say "  ---- $f (last 20 lines) ----"
        tail -n 20 "$f" | sed 's/^/  | /'
    done
}
