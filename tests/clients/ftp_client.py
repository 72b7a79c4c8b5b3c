"""The tests' Python ftplib client: one FTP or FTPS session, in one of four forms.

usage: ftp_client.py ops --mode plain|explicit|implicit --host H --port P [--ca CA.pem]
                         [--tls 1.2|1.3|any] [--user U] [--password P] [--reuse]
                         [--require-reuse] [--pre CODE:LINE]... OP...
       ftp_client.py ftplib-checks HOST PORT USER PASSWORD BIG_SHA256 UPLOAD_SEED
       ftp_client.py conformance HOST PORT USER PASSWORD NAME
       ftp_client.py e2e HOST USER PASSWORD [OPTIONS] COMMAND ...   (see E2E_USAGE)

ops: a list of operations in order (tests/tls.rs, tests/tls_vsftpd.rs), below.
ftplib-checks (tests/ftplib.rs): PASV and hand-made EPSV transfers, upload, REST, MLSD, and
ABOR sent the way ftplib sends it (MSG_OOB); exits non-zero on any mismatch.
conformance (tests/conformance.rs): prints what the client saw (reply texts of the backend's
replies, listing lines, checksums), so that a run straight against a server and a run through
ftpfront can be compared line by line. Greeting and 227 are not printed (they are ftpfront's
own); the upload goes to upload/NAME, NAME printed as "NAME".
e2e (tests/e2e/run.sh): the client of the e2e harness, below.

--mode explicit is ftplib.FTP_TLS (AUTH TLS at login, then prot_p()); implicit wraps the
socket in TLS at connect (a small FTP_TLS subclass: ftplib has no implicit mode), then
PBSZ 0 / PROT P. --tls pins the version (minimum = maximum) and checks what was negotiated.
ftplib never resumes the control connection's TLS session on data connections; --reuse makes
it do so (as curl and lftp do), --require-reuse also checks that every data connection was
resumed.

OPs (run in order, the first failure exits non-zero):
  list[:NAME]            LIST; the listing must contain NAME
  nlst[:DIR[:NAME]]      NLST (of DIR); the names must contain NAME
  retr:REMOTE:SHA256     download; its SHA-256 must match
  stor:REMOTE:LOCAL      upload the local file
  fail:CODE:LIST         a LIST that must end with reply CODE (e.g. 522, 521)
  fail:CODE:RETR:REMOTE  the same for a download
  cmd:CODE:LINE          a raw command whose reply must have CODE, e.g. "cmd:536:PROT S"

--pre CODE:LINE sends a raw command before login (before AUTH TLS too) whose reply must
have CODE, e.g. "--pre 220:HOST ftp.example.com" (RFC 7151, tests/routing.rs); repeatable.

Prints a transcript (ftplib debug output, passwords masked) and "ftps session ok".
"""
import argparse
import ftplib
import hashlib
import io
import os
import socket
import ssl
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(prog="ftp_client.py ops")
    p.add_argument("--mode", choices=["plain", "explicit", "implicit"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca")
    p.add_argument("--tls", choices=["1.2", "1.3", "any"], default="any")
    p.add_argument("--user", default="anonymous")
    p.add_argument("--password", default="guest@example.com")
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--require-reuse", action="store_true")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--pre", action="append", default=[])
    p.add_argument("ops", nargs="+")
    return p.parse_args(argv)


VERSION_NAMES = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}


def make_context(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.tls != "any":
        version = ssl.TLSVersion.TLSv1_2 if args.tls == "1.2" else ssl.TLSVersion.TLSv1_3
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def connect_implicit(ftp, host, port, timeout, announce=None):
    """Implicit FTPS for an FTP_TLS (ftplib has none): TLS from the first byte, then the
    greeting over it; `announce(tls_socket)` runs before the greeting is read."""
    ftp.host, ftp.port = host, port
    if timeout != -999:
        ftp.timeout = timeout
    sock = socket.create_connection((host, port), ftp.timeout)
    ftp.af = sock.family
    ftp.sock = ftp.context.wrap_socket(sock, server_hostname=host)
    if announce:
        announce(ftp.sock)
    ftp.file = ftp.sock.makefile("r", encoding=ftp.encoding)
    ftp.welcome = ftp.getresp()
    return ftp.welcome


class Client(ftplib.FTP_TLS):
    """FTP_TLS with implicit mode, optional session reuse on data connections, and a record
    of every data connection's TLS version and resumption."""

    implicit = False
    reuse = False

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.data_tls = []

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        if not self.implicit:
            return super().connect(host, port, timeout, source_address)
        return connect_implicit(self, host, port, timeout)

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            session = self.sock.session if self.reuse else None
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=session
            )
            self.data_tls.append((cmd, conn.version(), conn.session_reused))
        return conn, size


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def sha256_of_retr(ftp, remote, rest=None):
    digest = hashlib.sha256()
    ftp.retrbinary("RETR " + remote, digest.update, rest=rest)
    return digest.hexdigest()


def expect_failed_transfer(ftp, code, command):
    """Runs a transfer that must fail; returns the final reply code text."""
    try:
        conn = ftp.transfercmd(command)
    except ftplib.error_reply as e:
        return str(e)
    except ftplib.all_errors as e:
        if isinstance(e, ftplib.Error):
            return str(e)
        # The TLS handshake on the data connection failed: the reply is still to come.
        print(f"  data connection failed: {e!r}", flush=True)
        return ftp.getresp_text()
    try:
        while conn.recv(1 << 16):
            pass
    except (OSError, ssl.SSLError) as e:
        print(f"  data connection ended with {e!r}", flush=True)
    finally:
        conn.close()
    return ftp.getresp_text()


def getresp_text(self):
    try:
        return self.getresp()
    except ftplib.Error as e:
        return str(e)


ftplib.FTP.getresp_text = getresp_text


def run_ops(argv):
    args = parse_args(argv)
    tls = args.mode != "plain"
    if tls:
        ctx = make_context(args)
        Client.implicit = args.mode == "implicit"
        Client.reuse = args.reuse or args.require_reuse
        ftp = Client(context=ctx, timeout=args.timeout)
    else:
        ftp = ftplib.FTP(timeout=args.timeout)
    ftp.set_debuglevel(1)
    ftp.connect(args.host, args.port)
    if tls and args.mode == "implicit":
        print(f"implicit TLS: {ftp.sock.version()}", flush=True)
    for pre in args.pre:
        code, _, line = pre.partition(":")
        ftp.putcmd(line)
        reply = ftp.getresp_text()
        check(reply.startswith(code), f"{line}: expected {code}, got {reply!r}")
    ftp.login(args.user, args.password)
    if tls:
        check(isinstance(ftp.sock, ssl.SSLSocket), "control connection is not TLS")
        version = ftp.sock.version()
        print(f"control TLS version: {version}", flush=True)
        if args.tls != "any":
            check(version == VERSION_NAMES[args.tls], f"control leg negotiated {version}")
        ftp.prot_p()
    ftp.voidcmd("TYPE I")

    for n, op in enumerate(args.ops, 1):
        print(f"--- op {n}: {op}", flush=True)
        kind, _, rest = op.partition(":")
        if kind == "list":
            lines = []
            ftp.retrlines("LIST", lines.append)
            print("\n".join("  " + l for l in lines), flush=True)
            check(not rest or any(rest in l for l in lines), f"LIST lacks {rest}: {lines}")
        elif kind == "nlst":
            directory, _, name = rest.partition(":")
            names = ftp.nlst(*([directory] if directory else []))
            print("\n".join("  " + n for n in names), flush=True)
            check(not name or any(n.endswith(name) for n in names), f"NLST lacks {name}: {names}")
        elif kind == "retr":
            remote, want = rest.rsplit(":", 1)
            got = sha256_of_retr(ftp, remote)
            check(got == want, f"RETR {remote}: SHA-256 {got}, expected {want}")
        elif kind == "stor":
            remote, local = rest.split(":", 1)
            with open(local, "rb") as f:
                ftp.storbinary("STOR " + remote, f)
        elif kind == "fail":
            code, _, command = rest.partition(":")
            command = command.replace(":", " ", 1)
            reply = expect_failed_transfer(ftp, code, command)
            print(f"  {command} ended with {reply!r}", flush=True)
            check(reply.startswith(code), f"{command}: expected {code}, got {reply!r}")
        elif kind == "cmd":
            code, _, line = rest.partition(":")
            ftp.putcmd(line)
            reply = ftp.getresp_text()
            check(reply.startswith(code), f"{line}: expected {code}, got {reply!r}")
        else:
            raise SystemExit(f"unknown operation {op!r}")

    if tls:
        for cmd, version, reused in ftp.data_tls:
            print(f"data TLS: {cmd!r} {version} resumed={reused}", flush=True)
            if args.tls != "any":
                check(version == VERSION_NAMES[args.tls], f"{cmd}: data leg negotiated {version}")
            if args.require_reuse:
                check(reused, f"{cmd}: the data connection did not resume the TLS session")
        check(ftp.data_tls or not any(o.startswith(("list", "nlst", "retr", "stor")) for o in args.ops),
              "no TLS data connection was made")
    ftp.quit()
    print("ftps session ok", flush=True)


def upload_bytes(seed, size):
    """The same generator as tests/ftplib.rs's upload_bytes."""
    state = int(seed) | 1
    out = bytearray(size)
    for i in range(size):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = state >> 16 & 0xFF
    return bytes(out)


def ftplib_checks(argv):
    host, port, user, password, big_sha, upload_seed = argv
    port = int(port)

    ftp = ftplib.FTP()
    ftp.connect(host, port, timeout=30)
    ftp.login(user, password)
    ftp.voidcmd("TYPE I")

    # PASV (ftplib's default on IPv4), trusting the 227 address.
    ftp.trust_server_pasv_ipv4_address = True
    assert "big.bin" in ftp.nlst(), "NLST lists big.bin"
    assert sha256_of_retr(ftp, "big.bin") == big_sha, "PASV download intact"

    # EPSV by hand: ftplib only sends it on IPv6 connections.
    reply = ftp.sendcmd("EPSV")
    _, data_port = ftplib.parse229(reply, ftp.sock.getpeername())
    with socket.create_connection((host, data_port), timeout=30) as conn:
        ftp.sendcmd("RETR big.bin")
        digest = hashlib.sha256()
        while chunk := conn.recv(1 << 16):
            digest.update(chunk)
    ftp.voidresp()
    assert digest.hexdigest() == big_sha, "EPSV download intact"

    payload = upload_bytes(upload_seed, 3 * 1024 * 1024)
    ftp.storbinary("STOR upload/py.bin", io.BytesIO(payload))
    tail = sha256_of_retr(ftp, "upload/py.bin", rest=1000)
    assert tail == hashlib.sha256(payload[1000:]).hexdigest(), "REST resumes"

    facts = dict(ftp.mlsd())
    assert "big.bin" in facts, "MLSD lists big.bin"

    # ABOR in the middle of a download, sent with MSG_OOB as ftplib does.
    conn = ftp.transfercmd("RETR big.bin")
    conn.recv(1 << 16)
    first = ftp.abort()
    assert first.startswith("426"), f"ABOR first reply: {first}"
    second = ftp.getresp()
    assert second.startswith("226"), f"ABOR second reply: {second}"
    conn.close()
    assert ftp.pwd() is not None, "session continues after ABOR"
    assert sha256_of_retr(ftp, "big.bin") == big_sha, "download after ABOR"
    ftp.quit()
    print("ftplib session ok")


def conformance(argv):
    host, port, user, password, name = argv

    def sha(data):
        return hashlib.sha256(data).hexdigest()

    def retr(ftp, command, rest=None):
        chunks = []
        ftp.retrbinary(command, chunks.append, rest=rest)
        return b"".join(chunks)

    ftp = ftplib.FTP()
    ftp.connect(host, int(port), timeout=30)
    print("login", ftp.login(user, password))
    lines = []
    print("list", ftp.retrlines("LIST list", lines.append))
    print("\n".join(lines))
    whole = retr(ftp, "RETR data.bin")
    print("retr", len(whole), sha(whole), ftp.lastresp)
    tail = retr(ftp, "RETR data.bin", rest=1000)
    print("rest", len(tail), tail == whole[1000:], ftp.lastresp)
    payload = bytes(range(256)) * 1024
    print("stor", ftp.storbinary(f"STOR upload/{name}", io.BytesIO(payload)).replace(name, "NAME"))
    print("stored", sha(retr(ftp, f"RETR upload/{name}")) == sha(payload))
    text = []
    print("ascii", ftp.retrlines("RETR text.txt", text.append))
    print("\n".join(text))
    # QUIT is ftpfront's own reply (DESIGN.md's transparency rule): its code only.
    print("quit", ftp.quit()[:3])


E2E_USAGE = """The e2e form: the Python ftplib client of the e2e harness (tests/e2e/run.sh).

Every reply from the server is printed as "< 227 ...", every command as "> PASV" (PASS
masked), so the harness reads the 227/229 replies from this client's own output. Results
are printed as "SPEED <MiB/s>", "ELAPSED <seconds>", "OUTCOME <word>". Errors print
"ERROR ..." and exit 1; the harness decides what is expected.

Passive mode: PASV trusts the address in the 227 reply (trust_server_pasv_ipv4_address),
so a wrong address fails; EPSV is sent by hand (ftplib sends it only on IPv6).

FTPS: --tls explicit is ftplib.FTP_TLS (AUTH TLS before the login, then PBSZ 0 / PROT P);
--tls implicit wraps the socket in TLS at connect (a small subclass: ftplib has no implicit
mode; use --port 990), then PBSZ 0 / PROT P. The server's certificate is verified against
--ca and the host name (an IP address here). ftplib does not resume the control
connection's TLS session on data connections.

  ftp_client.py e2e HOST USER PASSWORD [--port N] [--tls explicit|implicit --ca CA.pem] ...
  ftp_client.py e2e HOST USER PASSWORD list   [--passive PASV|EPSV]
  ftp_client.py e2e HOST USER PASSWORD mlsd   [--passive PASV|EPSV]
  ftp_client.py e2e HOST USER PASSWORD get    REMOTE LOCAL [--passive ...]
  ftp_client.py e2e HOST USER PASSWORD put    LOCAL REMOTE [--passive ...]
  ftp_client.py e2e HOST USER PASSWORD ask-passive [--passive ...]
  ftp_client.py e2e HOST USER PASSWORD hold-and-get REMOTE LOCAL --ready F --go F [--opened F] [--rate B/s]
  ftp_client.py e2e HOST USER PASSWORD active [--port-address IP]
  ftp_client.py e2e HOST - - steal PORT
"""

TIMEOUT = 30
MIB = 1024 * 1024


class E2eClient(ftplib.FTP):
    """ftplib with its conversation printed and a choice of PASV or EPSV."""

    passive_command = "PASV"

    def putcmd(self, line):
        shown = "PASS ****" if line.upper().startswith("PASS ") else line
        print(f"> {shown}", flush=True)
        super().putcmd(line)

    def getmultiline(self):
        reply = super().getmultiline()
        for line in reply.splitlines():
            print(f"< {line}", flush=True)
        return reply

    def makepasv(self):
        if self.passive_command == "EPSV":
            peer = self.sock.getpeername()
            return ftplib.parse229(self.sendcmd("EPSV"), peer)
        return ftplib.parse227(self.sendcmd("PASV"))


class E2eTlsClient(E2eClient, ftplib.FTP_TLS):
    """Client over explicit FTPS (AUTH TLS at login) or, with implicit = True, implicit FTPS
    (TLS from the first byte, then login over it: FTP_TLS.login skips AUTH on a TLS socket)."""

    implicit = False

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        if not self.implicit:
            return super().connect(host, port, timeout, source_address)
        def announce(tls):
            print(f"TLS {tls.version()} (implicit)", flush=True)

        return connect_implicit(self, host, port, timeout, announce)


def connect(args):
    if args.tls == "none":
        ftp = E2eClient()
    else:
        ftp = E2eTlsClient(context=ssl.create_default_context(cafile=args.ca))
        ftp.implicit = args.tls == "implicit"
    ftp.trust_server_pasv_ipv4_address = True
    ftp.passive_command = args.passive
    ftp.connect(args.host, args.port, timeout=TIMEOUT)
    ftp.login(args.user, args.password)
    if args.tls != "none":
        ftp.prot_p()
    ftp.voidcmd("TYPE I")
    return ftp


def speed(nbytes, seconds):
    print(f"SPEED {nbytes / MIB / max(seconds, 1e-6):.1f}", flush=True)


def cmd_list(args):
    ftp = connect(args)
    lines = []
    ftp.retrlines("LIST", lines.append)
    for line in lines:
        print(f"LIST {line}")
    ftp.quit()


def cmd_mlsd(args):
    ftp = connect(args)
    for name, facts in ftp.mlsd():
        print(f"MLSD {name} type={facts.get('type')} size={facts.get('size')}")
    ftp.quit()


def cmd_get(args):
    ftp = connect(args)
    started = time.monotonic()
    with open(args.local, "wb") as out:
        ftp.retrbinary(f"RETR {args.remote}", out.write, blocksize=1 << 16)
    speed(os.path.getsize(args.local), time.monotonic() - started)
    ftp.quit()


def cmd_put(args):
    ftp = connect(args)
    started = time.monotonic()
    with open(args.local, "rb") as src:
        ftp.storbinary(f"STOR {args.remote}", src, blocksize=1 << 16)
    speed(os.path.getsize(args.local), time.monotonic() - started)
    ftp.quit()


def cmd_ask_passive(args):
    """Asks for a passive port once and reports the reply and how long it took."""
    ftp = connect(args)
    started = time.monotonic()
    try:
        ftp.sendcmd(args.passive)
    except ftplib.Error:
        pass  # the reply is printed; the harness judges it
    print(f"ELAPSED {time.monotonic() - started:.3f}", flush=True)
    ftp.quit()


def wait_for_file(path, seconds=60):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {seconds}s")
        time.sleep(0.02)


def write_atomically(path, text):
    with open(path + ".tmp", "w") as out:
        out.write(text)
    os.rename(path + ".tmp", path)


def cmd_hold_and_get(args):
    """PASV/EPSV, then wait (holding the reservation) until the harness says go; then
    connect, RETR, read at most --rate bytes/s, and signal --opened once the 150 came."""
    ftp = connect(args)
    host, port = ftp.makepasv()
    write_atomically(args.ready, f"{port}\n")
    wait_for_file(args.go)
    conn = socket.create_connection((host, port), timeout=TIMEOUT)
    ftp.sendcmd(f"RETR {args.remote}")  # raises unless 1xx
    if args.opened:
        write_atomically(args.opened, "150\n")
    started = time.monotonic()
    received = 0
    with open(args.local, "wb") as out:
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
            if args.rate:
                ahead = received / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    conn.close()
    ftp.voidresp()
    speed(received, time.monotonic() - started)
    ftp.quit()


def cmd_active(args):
    """Active mode: PORT naming --port-address (default: this host's own address, as
    ftplib and every client behind a NAT would), then LIST; prints every reply."""
    ftp = connect(args)
    listener = socket.create_server(("0.0.0.0", 0))
    listener.settimeout(TIMEOUT)
    address = args.port_address or ftp.sock.getsockname()[0]
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        ftp.sendport(address, port)
        ftp.sendcmd("LIST")
        conn, _ = listener.accept()
        conn.close()
        ftp.voidresp()
        print("OUTCOME listed", flush=True)
    except ftplib.Error:
        print("OUTCOME refused", flush=True)
    print(f"ELAPSED {time.monotonic() - started:.3f}", flush=True)
    ftp.quit()


def cmd_steal(args):
    """Connects to a passive port that is reserved for someone else and reports what
    happens: REFUSED, RESET, CLOSED (no data), DATA or TIMEOUT."""
    started = time.monotonic()
    try:
        conn = socket.create_connection((args.host, args.port), timeout=10)
    except ConnectionRefusedError:
        outcome = "REFUSED"
    else:
        conn.settimeout(10)
        try:
            data = conn.recv(1 << 16)
            outcome = f"DATA {len(data)}" if data else "CLOSED"
        except ConnectionResetError:
            outcome = "RESET"
        except socket.timeout:
            outcome = "TIMEOUT"
        conn.close()
    print(f"OUTCOME {outcome}")
    print(f"ELAPSED {time.monotonic() - started:.3f}")


def e2e(argv):
    parser = argparse.ArgumentParser(prog="ftp_client.py e2e", description=E2E_USAGE)
    parser.add_argument("host")
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument("--passive", choices=["PASV", "EPSV"], default="PASV")
    parser.add_argument("--port", type=int, default=21)
    parser.add_argument("--tls", choices=["none", "explicit", "implicit"], default="none")
    parser.add_argument("--ca", help="PEM CA certificate(s) to verify the server with")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list").set_defaults(run=cmd_list)
    sub.add_parser("mlsd").set_defaults(run=cmd_mlsd)
    get = sub.add_parser("get")
    get.add_argument("remote")
    get.add_argument("local")
    get.set_defaults(run=cmd_get)
    put = sub.add_parser("put")
    put.add_argument("local")
    put.add_argument("remote")
    put.set_defaults(run=cmd_put)
    sub.add_parser("ask-passive").set_defaults(run=cmd_ask_passive)
    hold = sub.add_parser("hold-and-get")
    hold.add_argument("remote")
    hold.add_argument("local")
    hold.add_argument("--ready", required=True)
    hold.add_argument("--go", required=True)
    hold.add_argument("--opened")
    hold.add_argument("--rate", type=float, default=0)
    hold.set_defaults(run=cmd_hold_and_get)
    active = sub.add_parser("active")
    active.add_argument("--port-address")
    active.set_defaults(run=cmd_active)
    steal = sub.add_parser("steal")
    steal.add_argument("port", type=int)
    steal.set_defaults(run=cmd_steal)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (OSError, EOFError, ftplib.Error) as e:
        hint = ""
        if isinstance(e, ssl.SSLEOFError):
            hint = " (the server closed a TLS connection without close_notify)"
        print(f"ERROR {type(e).__name__}: {e}{hint}", flush=True)
        sys.exit(1)


FORMS = {"ops": run_ops, "ftplib-checks": ftplib_checks, "conformance": conformance, "e2e": e2e}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in FORMS:
        raise SystemExit(__doc__)
    FORMS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
