"""Per-command latency of small transfers on one FTP session (driver of latency-probe.sh).

  python3 reply_latency.py HOST PORT USER PASS DIR N [nodelay]

On one logged-in session, N times each: STOR of 1 KiB, RETR of it, MLSD of DIR, MFMT.
Prints the median and the 90th percentile of each phase in ms:
  *_150: command sent -> 150 reply; *_data: 150 -> data connection done (EOF read / our
  close); *_226: data done -> final reply. A 226 that waits ~40 ms after the data is done
  is the signature of Nagle's algorithm on the server's control socket meeting the
  client's delayed ACK: the 150 was not yet acknowledged (the client had nothing to send),
  so the small 226 segment is held until the client's delayed-ACK timer fires.
"""
import ftplib
import socket
import statistics
import sys
import time

host, port, user, pw, d, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
ftp = ftplib.FTP()
ftp.connect(host, port)
ftp.login(user, pw)
ftp.voidcmd("TYPE I")
feat = ftp.sendcmd("FEAT")
has_mlsd = "MLST" in feat
has_mfmt = "MFMT" in feat
try:
    ftp.mkd(d)
except ftplib.error_perm:
    pass
payload = b"x" * 1024
res = {}


def rec(k, v):
    res.setdefault(k, []).append(v * 1000)


def timed_download(key, cmd):
    """Runs a command that sends data to us (RETR, MLSD, LIST), reading it to the
    end; records its three phases under `key`."""
    t0 = time.monotonic()
    conn = ftp.transfercmd(cmd)
    t1 = time.monotonic()
    while conn.recv(65536):
        pass
    conn.close()
    t2 = time.monotonic()
    ftp.voidresp()
    t3 = time.monotonic()
    rec(f"{key}_150", t1 - t0); rec(f"{key}_data", t2 - t1); rec(f"{key}_226", t3 - t2)


for i in range(n):
    name = f"{d}/lat{i}.bin"
    # STOR
    t0 = time.monotonic()
    conn = ftp.transfercmd(f"STOR {name}")  # returns after the 150
    t1 = time.monotonic()
    conn.sendall(payload)
    conn.close()
    t2 = time.monotonic()
    ftp.voidresp()
    t3 = time.monotonic()
    rec("STOR_150", t1 - t0); rec("STOR_data", t2 - t1); rec("STOR_226", t3 - t2)
    timed_download("RETR", f"RETR {name}")
    listing = "MLSD" if has_mlsd else "LIST"
    timed_download(listing, f"{listing} {d}")
    if has_mfmt:
        t0 = time.monotonic()
        ftp.sendcmd(f"MFMT 20200101000000 {name}")
        rec("MFMT", time.monotonic() - t0)
    t0 = time.monotonic()
    ftp.sendcmd("NOOP")
    rec("NOOP", time.monotonic() - t0)
ftp.quit()
for k, v in res.items():
    v.sort()
    print(f"{k}\t{statistics.median(v):.2f}\t{v[int(len(v) * 0.9) - 1]:.2f}")
