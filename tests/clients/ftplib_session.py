"""One ftplib session through ftpfront: PASV and hand-made EPSV transfers, upload, REST,
MLSD, and ABOR sent the way ftplib sends it (MSG_OOB). Exits non-zero on any mismatch."""
import hashlib
import io
import re
import socket
import sys
import ftplib

host, port, user, password, big_sha, upload_seed = sys.argv[1:7]
port = int(port)


def sha256_of_retr(ftp, command, rest=None):
    digest = hashlib.sha256()
    ftp.retrbinary(command, digest.update, rest=rest)
    return digest.hexdigest()


def upload_bytes(seed, size):
    state = int(seed) | 1
    out = bytearray(size)
    for i in range(size):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = state >> 16 & 0xFF
    return bytes(out)


ftp = ftplib.FTP()
ftp.connect(host, port, timeout=30)
ftp.login(user, password)
ftp.voidcmd("TYPE I")

# PASV (ftplib's default on IPv4), trusting the 227 address.
ftp.trust_server_pasv_ipv4_address = True
assert "big.bin" in ftp.nlst(), "NLST lists big.bin"
assert sha256_of_retr(ftp, "RETR big.bin") == big_sha, "PASV download intact"

# EPSV by hand: ftplib only sends it on IPv6 connections.
reply = ftp.sendcmd("EPSV")
data_port = int(re.search(r"\(\|\|\|(\d+)\|\)", reply).group(1))
with socket.create_connection((host, data_port), timeout=30) as conn:
    ftp.sendcmd("RETR big.bin")
    digest = hashlib.sha256()
    while chunk := conn.recv(1 << 16):
        digest.update(chunk)
ftp.voidresp()
assert digest.hexdigest() == big_sha, "EPSV download intact"

payload = upload_bytes(upload_seed, 3 * 1024 * 1024)
ftp.storbinary("STOR upload/py.bin", io.BytesIO(payload))
tail = hashlib.sha256()
ftp.retrbinary("RETR upload/py.bin", tail.update, rest=1000)
assert tail.hexdigest() == hashlib.sha256(payload[1000:]).hexdigest(), "REST resumes"

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
assert sha256_of_retr(ftp, "RETR big.bin") == big_sha, "download after ABOR"
ftp.quit()
print("ftplib session ok")
