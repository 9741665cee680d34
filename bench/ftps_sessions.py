#!/usr/bin/env python3
"""FTPS per-connection TLS session stores (issue 11 §1): what they cost.

Usage: python3 bench/ftps_sessions.py BINARY [BINARY ...]
For each ftpgate binary (e.g. one built before and one after the change) it starts a
gate with `server.tls = "required"` on 127.0.0.1 and measures, for TLS 1.3 and 1.2:
  - control: connect + AUTH TLS (full handshake, the per-connection store is built
    here) + NOOP + QUIT, sequentially, ms each (median of BENCH_N, default 300);
  - data: on one logged-in PROT P session, EPSV + RETR of 1 KiB with a resumed data
    handshake, ms each (median of BENCH_N);
  - memory: VmRSS growth while 300 TLS control connections stay open, KiB each.
Prints one Markdown table row per binary and TLS version.
"""

import ftplib
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

N = int(os.environ.get("BENCH_N", "300"))
HOLD = 300


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(binary, tmp):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=bench", "-keyout", f"{tmp}/key.pem",
         "-out", f"{tmp}/cert.pem"], check=True, capture_output=True)
    h = subprocess.run([binary, "hash-password"], input=b"bench\n", capture_output=True, check=True)
    phc = h.stdout.decode().strip().splitlines()[-1]
    port = free_port()
    os.makedirs(f"{tmp}/data", exist_ok=True)
    with open(f"{tmp}/data/small.bin", "wb") as f:
        f.write(os.urandom(1024))
    with open(f"{tmp}/ftpgate.toml", "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{port}"
tls = "required"
max_sessions_per_ip = 1000
max_sessions = 2000
[tls]
cert_file = "{tmp}/cert.pem"
key_file = "{tmp}/key.pem"
[storage]
kind = "local"
root = "{tmp}/data"
[[users]]
name = "bench"
password_hash = "{phc}"
""")
    env = dict(os.environ, RUST_LOG="warn")
    p = subprocess.Popen([binary, "--config", f"{tmp}/ftpgate.toml"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("gate did not start")


def ctx(version):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = c.maximum_version = version
    return c


class Reusing(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        return self.context.wrap_socket(conn, server_hostname=self.host,
                                        session=self.sock.session), size


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


def measure(binary, version):
    with tempfile.TemporaryDirectory() as tmp:
        p, port = start(binary, tmp)
        try:
            c = ctx(version)
            control = []
            for _ in range(N):
                t = time.perf_counter()
                f = ftplib.FTP_TLS(context=c)
                f.connect("127.0.0.1", port, timeout=15)
                f.auth()
                f.voidcmd("NOOP")
                f.quit()
                control.append(time.perf_counter() - t)
            f = Reusing(context=c)
            f.connect("127.0.0.1", port, timeout=15)
            f.login("bench", "bench")
            f.prot_p()
            data = []
            for _ in range(N):
                t = time.perf_counter()
                buf = bytearray()
                f.retrbinary("RETR small.bin", buf.extend)
                data.append(time.perf_counter() - t)
                assert len(buf) == 1024
            f.quit()
            before = rss(p.pid)
            held = []
            for _ in range(HOLD):
                h = ftplib.FTP_TLS(context=c)
                h.connect("127.0.0.1", port, timeout=15)
                h.auth()
                h.voidcmd("NOOP")
                held.append(h)
            grown = rss(p.pid) - before
            for h in held:
                h.close()
            return (statistics.median(control) * 1000, statistics.median(data) * 1000,
                    grown / HOLD)
        finally:
            p.terminate()
            p.wait(30)


def main():
    print("| binary | TLS | control AUTH TLS+NOOP+QUIT (ms) | PROT P RETR 1 KiB (ms) | RSS per open TLS control conn (KiB) |")
    print("|---|---|---|---|---|")
    for version, name in ((ssl.TLSVersion.TLSv1_3, "1.3"), (ssl.TLSVersion.TLSv1_2, "1.2")):
        for binary in sys.argv[1:]:
            c, d, m = measure(binary, version)
            print(f"| {os.path.basename(binary)} | {name} | {c:.2f} | {d:.2f} | {m:.1f} |", flush=True)


if __name__ == "__main__":
    main()
