"""One FTP or FTPS session with Python's ftplib, doing a list of operations in order.

usage: ftps_session.py --mode plain|explicit|implicit --host H --port P [--ca CA.pem]
                       [--tls 1.2|1.3|any] [--user U] [--password P] [--reuse]
                       [--require-reuse] OP...

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

Prints a transcript (ftplib debug output, passwords masked) and "ftps session ok".
"""
import argparse
import ftplib
import hashlib
import socket
import ssl
import sys


def parse_args():
    p = argparse.ArgumentParser()
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
    p.add_argument("ops", nargs="+")
    return p.parse_args()


VERSION_NAMES = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}


def make_context(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.tls != "any":
        version = ssl.TLSVersion.TLSv1_2 if args.tls == "1.2" else ssl.TLSVersion.TLSv1_3
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


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
        self.host, self.port = host, port
        if timeout != -999:
            self.timeout = timeout
        sock = socket.create_connection((host, port), self.timeout)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

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


def sha256_of_retr(ftp, remote):
    digest = hashlib.sha256()
    ftp.retrbinary("RETR " + remote, digest.update)
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


def main():
    args = parse_args()
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


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
