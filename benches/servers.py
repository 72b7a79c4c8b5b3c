"""The paths of the benchmark: vsftpd (direct, plain and FTPS), ftpfront and ProFTPD
mod_proxy in front of the same vsftpd, the bare relay in front of a vsftpd of its own (the
floor of one more hop), and a minimal idle backend for the memory figure."""

import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

# Room for 10,000 sessions (2 sockets each) and the ports; a container's hard limit may be
# lower, and then the idle figure is measured at as many sessions as it allows.
FD_LIMIT = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ranges handed out already: ftpfront binds its passive ports on first use, so a range
# given to one server still looks free when the next one asks.
_given_ranges = set()


def free_range(count):
    """A run of `count` ports below the ephemeral range that are all free now."""
    for start in range(20000, 32000 - count, count):
        if start in _given_ranges:
            continue
        ok = True
        for port in range(start, start + count):
            with socket.socket() as s:
                # As the servers bind: a port that only has TIME_WAIT connections is free.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            _given_ranges.add(start)
            return start, start + count - 1
    raise SystemExit("bench: no free passive port range")


def raise_fd_limit():
    """Runs in each child before exec."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def greets(port, host="127.0.0.1", timeout=2.0):
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            line = s.makefile("rb").readline()
            s.sendall(b"QUIT\r\n")
            return line.startswith(b"220")
    except OSError:
        return False


@dataclass
class Server:
    """A started server process and the port clients use."""

    name: str
    port: int
    proc: subprocess.Popen
    log: str
    host: str = "127.0.0.1"

    def wait_ready(self):
        for _ in range(150):
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: {self.name} exited at start:\n{tail(self.log)}")
            if greets(self.port, self.host):
                return self
            time.sleep(0.1)
        raise SystemExit(f"bench: {self.name} did not greet on port {self.port}:\n{tail(self.log)}")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(name, argv, work, port, env=None, host="127.0.0.1"):
    log = os.path.join(work, f"{name}.log")
    out = open(log, "wb")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=raise_fd_limit,
        env=env,
    )
    out.close()
    server = Server(name, port, proc, log, host)
    return server.wait_ready()


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def make_cert(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-days", "2", "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.chmod(key, 0o644)  # proftpd reads it after dropping to nobody
    return cert, key


def start_vsftpd(tools, work, root, name, cert=None, behind_bare_relay=None):
    """`behind_bare_relay`: a passive range (low, high) for a vsftpd behind the bare relay:
    it listens on 127.0.0.2 and announces 127.0.0.1, where the relay takes every port."""
    port = free_port()
    empty = os.path.join(work, "empty")
    os.makedirs(empty, exist_ok=True)
    address = "127.0.0.2" if behind_bare_relay else "127.0.0.1"
    lines = [
        "listen=YES", "listen_ipv6=NO", f"listen_address={address}", f"listen_port={port}",
        "background=NO", "seccomp_sandbox=NO", "run_as_launching_user=YES",
        f"secure_chroot_dir={empty}", "tcp_wrappers=NO", "connect_from_port_20=NO",
        "anonymous_enable=YES", "local_enable=NO", "write_enable=YES",
        "anon_upload_enable=YES", "anon_other_write_enable=YES", "anon_umask=022",
        "ftp_username=nobody",
        f"anon_root={root}", "xferlog_enable=NO",
        "max_clients=0", "max_per_ip=0", f"vsftpd_log_file={work}/{name}-xfer.log",
    ]
    if behind_bare_relay:
        low, high = behind_bare_relay
        lines += ["pasv_address=127.0.0.1", f"pasv_min_port={low}", f"pasv_max_port={high}"]
    if cert:
        lines += [
            "ssl_enable=YES", "allow_anon_ssl=YES", "force_anon_logins_ssl=NO",
            "force_anon_data_ssl=NO", "require_ssl_reuse=NO", f"rsa_cert_file={cert[0]}",
            f"rsa_private_key_file={cert[1]}", "ssl_ciphers=HIGH",
        ]
    conf = os.path.join(work, f"{name}.conf")
    write(conf, "\n".join(lines) + "\n")
    return spawn(name, [tools["vsftpd"], conf], work, port, host=address)


def start_bare_path(tools, work, root, name, cert=None, ports=400):
    """The floor: a vsftpd on 127.0.0.2 and the bare relay (benches/bare-relay) on
    127.0.0.1 in front of its control port and its whole passive range."""
    low, high = free_range(ports)
    backend = start_vsftpd(tools, work, root, f"{name}-vsftpd", cert, (low, high))
    port = free_port()
    argv = [tools["bare_relay"], "127.0.0.1", "127.0.0.2", str(port), str(backend.port),
            str(low), str(high)]
    return backend, spawn(name, argv, work, port)


def start_ftpfront(tools, work, backend_port, name, cert=None, sessions=20000, ports=400):
    port, metrics = free_port(), free_port()
    low, high = free_range(ports)
    tls = ""
    if cert:
        tls = f'[tls]\nmode = "optional"\ncert = "{cert[0]}"\nkey = "{cert[1]}"\n'
    conf = os.path.join(work, f"{name}.toml")
    write(conf, f"""[listen]
control = "127.0.0.1:{port}"

[passive]
ports = "{low}-{high}"
public_address = "127.0.0.1"
bind = "127.0.0.1"

{tls}
[[backends]]
name = "vsftpd"
address = "127.0.0.1:{backend_port}"

[routing]
default = "vsftpd"

[limits]
max_sessions = {sessions}
max_sessions_per_ip = {sessions}

[metrics]
listen = "127.0.0.1:{metrics}"

[log]
filter = "warn"
""")
    env = dict(os.environ, RUST_LOG="warn")
    return spawn(name, [tools["ftpfront"], "run", "--config", conf], work, port, env)


def start_mod_proxy(tools, work, backend_port, name, cert=None, instances=2000):
    port = free_port()
    base = os.path.join(work, name)
    modules = os.path.join(base, "modules")
    tables = os.path.join(base, "tables")
    os.makedirs(modules, exist_ok=True)
    os.makedirs(tables, exist_ok=True)
    os.chmod(base, 0o755)
    os.chmod(tables, 0o777)
    for module in ("mod_tls.so", "mod_proxy.so"):
        target = os.path.join(modules, module)
        if not os.path.exists(target):
            os.symlink(tools[module], target)
    low, high = free_range(200)
    lines = [
        f'ServerName "bench mod_proxy"', "ServerType standalone", "DefaultServer on",
        "UseIPv6 off", "DefaultAddress 127.0.0.1", "SocketBindTight on", f"Port {port}",
        "User nobody", "Group nogroup", f"PidFile {base}/proftpd.pid",
        f"ScoreboardFile {base}/proftpd.scoreboard", "DelayTable none", "WtmpLog off",
        "UseReverseDNS off", "AuthPAM off", f"MaxInstances {instances}",
        f"PassivePorts {low} {high}", f"ModulePath {modules}", "LoadModule mod_tls.c",
        "LoadModule mod_proxy.c", "ProxyEngine on", "ProxyRole reverse",
        f"ProxyReverseServers ftp://127.0.0.1:{backend_port}", f"ProxyTables {tables}",
        "ProxyDataTransferPolicy EPSV", "ProxyTimeoutConnect 5sec",
        f"ProxyLog {base}/proxy.log",
    ]
    if cert:
        lines += [
            "TLSEngine on", f"TLSRSACertificateFile {cert[0]}",
            f"TLSRSACertificateKeyFile {cert[1]}", "TLSRequired off",
            "TLSOptions NoSessionReuseRequired", "TLSProtocol TLSv1.2 TLSv1.3",
            f"TLSLog {base}/tls.log", "ProxyTLSEngine off",
        ]
    conf = os.path.join(base, "proftpd.conf")
    write(conf, "\n".join(lines) + "\n", 0o644)
    return spawn(name, [tools["proftpd"], "-n", "-c", conf], work, port)


# The idle backend: answers a login and then nothing but NOOP, so 10,000 logged-in sessions
# cost the backend side (a Python process) little and ftpfront can be measured alone.
REPLIES = {
    b"USER": b"331 Password please.\r\n",
    b"PASS": b"230 Logged in.\r\n",
    b"NOOP": b"200 NOOP ok.\r\n",
    b"SYST": b"215 UNIX Type: L8\r\n",
    b"FEAT": b"211-Features:\r\n EPSV\r\n211 End\r\n",
    b"TYPE": b"200 Type set.\r\n",
    b"PWD": b'257 "/" is the current directory\r\n',
}


async def idle_session(reader, writer):
    try:
        writer.write(b"220 idle backend\r\n")
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"QUIT":
                writer.write(b"221 Bye.\r\n")
                await writer.drain()
                break
            writer.write(REPLIES.get(verb, b"502 Not here.\r\n"))
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def serve_idle_backend(port):
    server = await asyncio.start_server(idle_session, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def start_idle_backend(work):
    port = free_port()
    argv = [sys.executable, os.path.join(os.path.dirname(__file__), "bench.py"),
            "idle-backend", str(port)]
    return spawn("idle-backend", argv, work, port)


def find_tools(prefix, ftpfront, bare_relay=None):
    tools = {
        "vsftpd": shutil.which("vsftpd") or "/usr/sbin/vsftpd",
        "curl": shutil.which("curl"),
        "openssl": shutil.which("openssl"),
        "ftpfront": ftpfront,
        "bare_relay": bare_relay,
        "proftpd": os.path.join(prefix, "proftpd-core/usr/sbin/proftpd"),
        "mod_proxy.so": os.path.join(prefix, "proftpd-mod-proxy/usr/lib/proftpd/mod_proxy.so"),
        "mod_tls.so": os.path.join(prefix, "proftpd-mod-crypto/usr/lib/proftpd/mod_tls.so"),
    }
    for name in ("vsftpd", "curl", "openssl", "ftpfront"):
        if not tools[name] or not os.path.exists(tools[name]):
            raise SystemExit(f"bench: {name} not found: run scripts/install-test-deps.sh first")
    if bare_relay and not os.path.exists(bare_relay):
        raise SystemExit(f"bench: no bare relay at {bare_relay}")
    tools["mod_proxy"] = all(
        os.path.exists(tools[k]) for k in ("proftpd", "mod_proxy.so", "mod_tls.so"))
    return tools
