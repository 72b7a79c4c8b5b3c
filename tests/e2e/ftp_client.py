#!/usr/bin/env python3
"""The Python ftplib client of the e2e harness (tests/e2e/run.sh).

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

  ftp_client.py HOST USER PASSWORD [--port N] [--tls explicit|implicit --ca CA.pem] ...
  ftp_client.py HOST USER PASSWORD list   [--passive PASV|EPSV]
  ftp_client.py HOST USER PASSWORD mlsd   [--passive PASV|EPSV]
  ftp_client.py HOST USER PASSWORD get    REMOTE LOCAL [--passive ...]
  ftp_client.py HOST USER PASSWORD put    LOCAL REMOTE [--passive ...]
  ftp_client.py HOST USER PASSWORD ask-passive [--passive ...]
  ftp_client.py HOST USER PASSWORD hold-and-get REMOTE LOCAL --ready F --go F [--opened F] [--rate B/s]
  ftp_client.py HOST USER PASSWORD active [--port-address IP]
  ftp_client.py HOST - - steal PORT
"""
import argparse
import ftplib
import os
import socket
import ssl
import sys
import time

TIMEOUT = 30
MIB = 1024 * 1024


class Client(ftplib.FTP):
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


class TlsClient(Client, ftplib.FTP_TLS):
    """Client over explicit FTPS (AUTH TLS at login) or, with implicit = True, implicit FTPS
    (TLS from the first byte, then login over it: FTP_TLS.login skips AUTH on a TLS socket)."""

    implicit = False

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        if not self.implicit:
            return super().connect(host, port, timeout, source_address)
        self.host, self.port = host, port
        if timeout != -999:
            self.timeout = timeout
        sock = socket.create_connection((host, port), self.timeout)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=host)
        print(f"TLS {self.sock.version()} (implicit)", flush=True)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def connect(args):
    if args.tls == "none":
        ftp = Client()
    else:
        ftp = TlsClient(context=ssl.create_default_context(cafile=args.ca))
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = parser.parse_args()
    try:
        args.run(args)
    except (OSError, EOFError, ftplib.Error) as e:
        hint = ""
        if isinstance(e, ssl.SSLEOFError):
            hint = " (the server closed a TLS connection without close_notify)"
        print(f"ERROR {type(e).__name__}: {e}{hint}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
