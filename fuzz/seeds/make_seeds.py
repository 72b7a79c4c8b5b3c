#!/usr/bin/env python3
"""Writes the hand-made seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Run from anywhere: `python3 fuzz/seeds/make_seeds.py`. Seeds are named seed-*, so
re-running replaces them without touching what libFuzzer added (hash-named files).
"""
import hashlib
import ipaddress
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, seeds):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    for index, data in enumerate(seeds):
        digest = hashlib.sha1(data).hexdigest()[:8]
        (folder / f"seed-{index:02}-{digest}").write_bytes(data)


COMMANDS = [
    b"USER anonymous\r\n",
    b"PASS guest@example.com\r\n",
    b"USER alice\r\nPASS s3cret\r\nSYST\r\nFEAT\r\nPWD\r\n",
    b"AUTH TLS\r\n",
    b"AUTH TLS\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"PBSZ 0\r\nPROT P\r\n",
    b"TYPE I\r\nPASV\r\nRETR file.txt\r\n",
    b"EPSV\r\nLIST -la\r\n",
    b"EPSV ALL\r\n",
    b"EPSV 2\r\n",
    b"PORT 192,168,1,2,4,1\r\n",
    b"EPRT |1|132.235.1.2|6275|\r\n",
    b"EPRT |2|1080::8:800:200C:417A|5282|\r\n",
    b"EPRT |2|::ffff:10.0.0.5|30000|\r\n",
    b"REST 1024\r\nSTOR  two  spaces \r\n",
    b"CWD /pub/caf\xe9\r\nNLST\r\n",
    b"MLSD\nMLST file\nSIZE file\nMDTM file\n",
    b"\xff\xf4\xff\xf2ABOR\r\n",
    b"\xff\xf4\xffABOR\r\n\xf2ABOR\r\n",
    b"\xff\xff\xff\xfd\x01\xff\xf1NOOP\r\n",
    b"RNFR a\r\nRNTO b\r\nDELE c\r\nMKD d\r\nRMD d\r\n",
    b"SITE CHMOD 755 x\r\nOPTS UTF8 ON\r\nCLNT ftplib\r\n",
    b"HOST ftp.example.com\r\nLANG en\r\n",
    b"xyzzy 1\r\nX2GO\r\nABCDEFGHIJKLMNOP\r\nABCDEFGHIJKLMNOPQ\r\n",
    b"RETR a\0b\r\nRETR a\rb\r\nNOOP\r\r\n",
    b" NOOP\r\n1ABC\r\nRE-TR x\r\nUSER\tbob\r\n",
    b"LIST \r\nLIST\r\n\r\n\n",
    b"NOOP\r",
    b"QUIT",
    b"RETR " + b"x" * 300 + b"\r\nNOOP\r\n",
    b"A" * 70 + b"\r" + b"\n" + b"NOOP\r\n",
    b"STOU\r\nAPPE log\r\nALLO 100\r\nMODE S\r\nSTRU F\r\nCDUP\r\nXPWD\r\n",
]


def splitter_seeds():
    # Header: mode (line limit), shape (chunk count - 1, repeat - 1), drain mask, chunks.
    plans = [
        (0xC0, 0x00, 0xFF, [0]),         # DEFAULT_MAX_LINE_LENGTH, one push
        (0x10, 0x02, 0xFF, [1, 2, 3]),   # max 16, tiny chunks
        (0x04, 0x01, 0x55, [5, 7]),      # max 4
        (0x00, 0x00, 0xFF, [1]),         # max 0
        (0x3F, 0x03, 0x0F, [8, 0, 13, 1]),
        (0x40, 0x38, 0xAA, [64]),        # max 255, body repeated
        (0x80, 0x7A, 0x01, [200, 33, 7]),  # max 512, repeated 16 times
    ]
    seeds = []
    for index, body in enumerate(COMMANDS):
        mode, shape, drain, chunks = plans[index % len(plans)]
        seeds.append(bytes([mode, shape, drain, *chunks]) + body)
    return seeds


REPLIES = [
    b"220 Welcome to the FTP server\r\n",
    b"220-Welcome\r\n220-to ftpfront\r\n220 ready\r\n",
    b"211-Features:\r\n MDTM\r\n REST STREAM\r\n SIZE\r\n MLST type*;size*;modify*;\r\n"
    b" UTF8\r\n EPSV\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n",
    b"211-FTP server status:\r\n     Connected to 10.0.0.1\r\n     Logged in as ftp\r\n"
    b"     TYPE: ASCII\r\n     Session bandwidth limit in byte/s is 0\r\n"
    b"     At session startup, client count was 1\r\n211 End of status\r\n",
    b"213-Status follows:\r\n-rw-r--r--   1 0 0  12 Jan 01 00:00 a.txt\r\n213 End of status\r\n",
    b"227 Entering Passive Mode (10,0,0,5,117,48).\r\n",
    b"229 Entering Extended Passive Mode (|||6446|)\r\n",
    b"150 Opening BINARY mode data connection\r\n226 Transfer complete\r\n",
    b"331 Please specify the password.\r\n230 Login successful.\r\n",
    b"257 \"/a b \" created \r\n",
    b"550 caf\xe9: not found\r\n",
    b"200\r\n211-a\r\n211\r\n",
    b"211-Features:\r\n 200 is just text\r\n211-still middle\r\n211still middle\r\n"
    b"230 other code\r\n\r\n211 End\r\n",
    b"226-x\r\n\xff\xfe\r\n226 y\r\n",
    b"abc\r\n22\r\n099 x\r\n600 x\r\n2x0 x\r\n 220 x\r\n\xff\r\n",
    b"200 ok\n230-multi\n with LF only\n230 done\n",
    b"214-The following commands are recognized.\r\n ABOR ACCT ALLO APPE CDUP CWD  DELE EPRT\r\n"
    b" EPSV FEAT HELP LIST MDTM MKD  MODE NLST\r\n214 Help OK.\r\n",
    b"221 Goodbye.\r\n",
    b"421 Service not available, closing control connection.\r\n",
    b"500 Syntax error, invalid command \"X\"\r\n",
    b"530-Login incorrect.\r\n530 Login incorrect.\r\n",
    b"150-a\r\n150 b\r\n226 done\r\n",
    b"100 x\r\n599 x\r\n",
    b"211-" + b"line\r\n" * 40 + b"211 End\r\n",
]


def reply_seeds():
    modes = [0x10, 0x90, 0x1F, 0x01, 0x02, 0x50, 0x00, 0x08]
    return [bytes([modes[i % len(modes)]]) + body for i, body in enumerate(REPLIES)]


def addr_seeds():
    return [
        b"192,168,1,2,4,1",
        b"  192,168,1,2,4,1 \t",
        b"192, 168 ,1,2,4,1",
        b"10,0,0,5,117,48",
        b"1,2,3,4,0,0",
        b"1,2,3,256,5,6",
        b"(1,2,3,4,5,6)",
        b"+1,2,3,4,5,6",
        b"|1|132.235.1.2|6275|",
        b"|2|::1|6275|",
        b" !2!1080::8:800:200C:417A!5282! ",
        b"|2|::ffff:10.0.0.5|30000|",
        b"|2|::ffff:0a00:0005|30000|",
        b"|2|fe80::1%eth0|21|",
        b"|2|2001:db8::1|65535|",
        b"|3|whatever|21|",
        b"|1|1.2.3.4|0|",
        b"|1|1.2.3.4|65536|",
        b"|1|1.2.3.4|+21|",
        b"\x7f1\x7f1.2.3.4\x7f21\x7f",
        b"ALL",
        b"all",
        b"1",
        b"2",
        b"3",
        b" ",
        b"Entering Passive Mode (10,0,0,5,117,48).",
        b"=10,0,0,5,117,48",
        b"Entering Passive Mode (10, 0, 0, 5, 117, 48)",
        b"Mode 2 (10,0,0,5,117,48)",
        b"(256,0,0,1,1,1)",
        b"(1,2,3,4,5,99999999999999999999)",
        b"227 Entering Passive Mode (10,0,0,5,117,48).\r\n",
        b"227-Passive\r\n227 (1,2,3,4,0,1)\r\n",
        b"229 Entering Extended Passive Mode (|||6446|)\r\n",
        b"Entering Extended Passive Mode (|||6446|)",
        b"(!!!6446!)",
        b"x (not it) (|||6446|) trailing",
        b"(|||000001|)",
        b"(|||65536|)",
        b"(||||)",
    ]


def v2_header(command, family, body, tlvs=b""):
    length = len(body) + len(tlvs)
    return (b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x20 | command, family])
            + struct.pack(">H", length) + body + tlvs)


def v4_body(src, dst, sport, dport):
    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack(">HH", sport, dport))


def v6_body(src, dst, sport, dport):
    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack(">HH", sport, dport))


def proxy_seeds():
    tlv = bytes([0x02, 0x00, 0x0B]) + b"example.com" + bytes([0x04, 0x00, 0x01, 0x00])
    unix = b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0")
    headers = [
        b"PROXY TCP4 192.0.2.10 10.0.0.1 40000 21\r\nUSER a\r\n",
        b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 21\r\n",
        b"PROXY TCP6 ::ffff:192.0.2.10 ::1 40000 21\r\n",
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nPROXY TCP4 9.9.9.9 9.9.9.9 9 9\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
        b"PROXY \r\n",
        b"PROXY",
        b"GET / HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        v2_header(1, 0x11, v4_body("192.0.2.10", "10.0.0.1", 40000, 21)) + b"USER a\r\n",
        v2_header(1, 0x21, v6_body("2001:db8::1", "2001:db8::2", 40000, 21)),
        v2_header(1, 0x21, v6_body("::ffff:192.0.2.10", "::ffff:10.0.0.1", 1, 2)),
        v2_header(1, 0x11, v4_body("1.2.3.4", "5.6.7.8", 1, 2), tlv),
        v2_header(0, 0x00, b""),
        v2_header(0, 0x11, v4_body("1.2.3.4", "5.6.7.8", 1, 2)),
        v2_header(1, 0x00, b""),
        v2_header(1, 0x31, unix),
        v2_header(1, 0x12, v4_body("1.2.3.4", "5.6.7.8", 1, 2)),
        v2_header(1, 0x11, b"\x01\x02\x03"),
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x10\x01" + b"\0" * 64,
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c" + v4_body("1.2.3.4", "5.6.7.8", 1, 2),
        b"\r\n\r\n\0\r\nQ",
    ]
    # Mode: low nibble = bytes per read (0: all), bits 4-5 = peer, bit 6 = encoder round trip.
    modes = [0x40, 0x41, 0x50, 0x07, 0x0F, 0x20, 0x30, 0x43]
    return [bytes([modes[i % len(modes)]]) + h for i, h in enumerate(headers)]


def config_seeds():
    files = sorted((ROOT / "config").glob("*.toml")) + sorted((ROOT / "config" / "examples").glob("*.toml"))
    seeds = [path.read_bytes() for path in files]
    seeds += [
        b"",
        b"[[backends]]\nname = \"a\"\naddress = \"h:21\"\n",
        b"[[backends]]\nname = \"a\"\naddress = \"h:21\"\nproxy_protocol = \"v2\"\n"
        b"[listen]\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"fd00::/8\"]\n",
        b"[listen]\nproxy_protocol = true\n",
        b"[listen]\nproxy_protocol = true\nproxy_protocol_from = [\"::ffff:10.0.0.0/104\"]\n",
        b"[[backends]]\nname = \"a\"\naddress = \"h:21\"\n[metrics]\nbasic_auth_user = \"prom\"\n"
        b"basic_auth_password = \"hunter2\"\n",
        b"[tls]\nmode = \"optional\"\nkey = \"/k.pem\"\n",
        b"[passive]\nports = \"30000-30010\"\nadvertised_ports = \"50000-50010\"\n"
        b"[[passive.public_address_by_client]]\nclients = [\"192.168.0.0/16\"]\naddress = \"192.168.1.10\"\n",
        b"[limits]\nidle_timeout = \"1h 30m\"\nmax_sessions = 0\n",
        b"[nope]\nx = 1\n",
        b"[listen]\ncontrol = \"[::]:21\"\nproxy_protocol_timeout = \"0s\"\n",
    ]
    return seeds


write("line_splitter_command", splitter_seeds())
write("reply_parser", reply_seeds())
write("addr", addr_seeds())
write("proxy_header", proxy_seeds())
write("config_toml", config_seeds())
