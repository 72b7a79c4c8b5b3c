"""One ftplib session for tests/conformance.rs: prints what the client saw (reply texts of
the backend's replies, listing lines, checksums), so that a run straight against a server and
a run through ftpfront can be compared line by line. Greeting and 227 are not printed (they
are ftpfront's own); the upload goes to upload/NAME, NAME printed as "NAME"."""
import hashlib
import io
import sys
import ftplib

host, port, user, password, name = sys.argv[1:6]


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
