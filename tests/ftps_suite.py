#!/usr/bin/env python3
"""FTPS checks for ftpgate driven by Python's ssl + ftplib (OpenSSL, independent of
the server's rustls). Run by tests/ftps.rs; each argument names one test.

Environment: FTP_HOST, FTP_PORT, FTP_USER, FTP_PASS, FTP_ROOT (local root or
empty), FTPS_CA (PEM file(s) to trust, `:`-separated), FTPS_MODE (optional |
required), FTPS_REUSE (1 when the server requires TLS session reuse),
FTPS_IMPLICIT_PORT, and for the reload tests GATE_PID, FTPS_CERT_FILE,
FTPS_KEY_FILE, FTPS_NEW_CERT, FTPS_NEW_KEY, FTPS_RELOAD (sighup | poll),
FTPS_TLS (1.2 | 1.3: the only TLS version the clients offer).
Exits 1 when any check fails; prints `all ftps tests passed` otherwise.
"""

import ftplib
import hashlib
import io
import os
import random
import shutil
import signal
import socket
import ssl
import sys
import time
import traceback

HOST = os.environ.get("FTP_HOST", "127.0.0.1")
PORT = int(os.environ.get("FTP_PORT", "0"))
USER = os.environ.get("FTP_USER", "tester")
PASS = os.environ.get("FTP_PASS", "")
ROOT = os.environ.get("FTP_ROOT") or None
MODE = os.environ.get("FTPS_MODE", "optional")
REUSE = os.environ.get("FTPS_REUSE", "0") == "1"
CA = [p for p in os.environ.get("FTPS_CA", "").split(":") if p]
TLS = os.environ.get("FTPS_TLS", "")
TIMEOUT = 15


def context(verify=True):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if verify and CA:
        for p in CA:
            ctx.load_verify_locations(p)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if TLS:
        v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[TLS]
        ctx.minimum_version = v
        ctx.maximum_version = v
    return ctx


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS that resumes the control connection's TLS session on data
    connections (what vsftpd, AWS Transfer Family and ftpgate's
    require_session_reuse expect)."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        return conn, size


class ImplicitFTP_TLS(ReusingFTP_TLS):
    """Implicit FTPS: TLS from the first byte, no AUTH TLS."""

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        if host:
            self.host = host
        if port:
            self.port = port
        if timeout != -999:
            self.timeout = timeout
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.context.wrap_socket(raw, server_hostname=self.host)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def client(cls=None, login=True, prot_p=True, verify=True):
    if cls is None:
        cls = ReusingFTP_TLS if REUSE else ftplib.FTP_TLS
    ftp = cls(context=context(verify))
    ftp.encoding = "utf-8"
    ftp.connect(HOST, PORT, timeout=TIMEOUT)
    if login:
        resp = ftp.login(USER, PASS)
        assert resp.startswith("230"), resp
        if prot_p:
            assert ftp.prot_p().startswith("200")
    return ftp


def payload(n, seed):
    return random.Random(seed).randbytes(n)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def recv_all(conn):
    """Everything `conn` sends until it closes."""
    buf = bytearray()
    while True:
        b = conn.recv(65536)
        if not b:
            return bytes(buf)
        buf += b


def code_of(fn, *args):
    """Runs an ftplib call; the 3-digit code of its reply or error."""
    try:
        resp = fn(*args)
    except ftplib.all_errors as e:
        resp = str(e)
    return int(resp[:3]) if resp[:3].isdigit() else 0


def put(ftp, name, data):
    resp = ftp.storbinary("STOR " + name, io.BytesIO(data))
    assert resp.startswith("226"), resp


def get(ftp, name):
    buf = bytearray()
    resp = ftp.retrbinary("RETR " + name, buf.extend)
    assert resp.startswith("226"), resp
    return bytes(buf)


def on_disk(name):
    return os.path.join(ROOT, name) if ROOT else None


def size_missing(ftp, name):
    # Nothing under the final name (MDTM: SIZE reports the user's own pending,
    # resumable upload, storage.resume_window_secs).
    return code_of(ftp.sendcmd, "MDTM " + name) == 550


# --------------------------------------------------------------------------


def test_explicit_commands():
    """AUTH TLS → 234, TLS ≥ 1.2 (1.3 preferred), PBSZ 0 → 200, PROT P → 200,
    PROT C → 200 (optional) / 534 (required), CCC → 534."""
    ftp = ftplib.FTP_TLS(context=context())
    ftp.connect(HOST, PORT, timeout=TIMEOUT)
    resp = ftp.auth()
    assert resp.startswith("234"), resp
    version = ftp.sock.version()
    print("  negotiated", version, ftp.sock.cipher()[0], "ALPN", ftp.sock.selected_alpn_protocol())
    assert version in ("TLSv1.2", "TLSv1.3"), version
    assert version == "TLSv1.3", "TLS 1.3 should be preferred, got " + version
    assert ftp.login(USER, PASS).startswith("230")
    assert ftp.voidcmd("PBSZ 0").startswith("200")
    assert ftp.voidcmd("PROT P").startswith("200")
    c = code_of(ftp.sendcmd, "PROT C")
    if MODE == "required":
        assert c == 534, "PROT C in required mode answered %d" % c
    else:
        assert c == 200, "PROT C in optional mode answered %d" % c
    c = code_of(ftp.sendcmd, "CCC")
    assert c == 534, "CCC answered %d" % c
    # The control channel is still encrypted and works.
    assert ftp.voidcmd("NOOP").startswith("200")
    assert isinstance(ftp.sock, ssl.SSLSocket)
    ftp.quit()


def test_prot_p_transfer():
    """PROT P upload, download, listing with SHA-256 checks (session-reusing
    client when the server requires reuse)."""
    ftp = client()
    data = payload(3 * 1024 * 1024 + 11, 1)
    put(ftp, "tls up.bin", data)
    if ROOT:
        with open(on_disk("tls up.bin"), "rb") as f:
            assert sha(f.read()) == sha(data), "stored bytes differ"
    assert sha(get(ftp, "tls up.bin")) == sha(data), "downloaded bytes differ"
    names = ftp.nlst()
    assert "tls up.bin" in names, names
    lines = []
    ftp.retrlines("LIST", lines.append)
    assert any(l.endswith(" tls up.bin") for l in lines), lines
    if MODE == "optional":
        # Back to clear data under the same encrypted control connection.
        assert ftp.prot_c().startswith("200")
        assert sha(get(ftp, "tls up.bin")) == sha(data)
    ftp.quit()


def test_no_close_notify_upload():
    """Under PROT P an upload whose data connection ends without TLS
    close_notify (the TCP connection is shut under the TLS layer) fails (426 or
    451) and commits nothing; the same upload ended properly commits."""
    ftp = client()
    host, port = ftp.makepasv()
    raw = socket.create_connection((host, port), TIMEOUT)
    resp = ftp.sendcmd("STOR truncated.bin")
    assert resp.startswith("150") or resp.startswith("125"), resp
    kw = {"session": ftp.sock.session} if REUSE else {}
    conn = ftp.context.wrap_socket(raw, server_hostname=HOST, **kw)
    conn.sendall(payload(1024 * 1024, 2))
    time.sleep(0.3)  # let the server consume the records
    # SSLSocket.shutdown drops the TLS layer without close_notify and sends a
    # TCP FIN; drain what the server still sends so close() is not an RST.
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(5)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    conn.close()
    c = code_of(ftp.getresp)
    assert c in (426, 451), "upload without close_notify answered %d" % c
    time.sleep(0.2)
    assert size_missing(ftp, "truncated.bin"), "truncated upload became visible"
    if ROOT:
        assert not os.path.exists(on_disk("truncated.bin"))
        # (the hidden pending directory holds it for resuming: resume_window_secs)
        left = [n for n in os.listdir(ROOT) if n.startswith(".ftpgate-tmp")
                and n != ".ftpgate-tmp-pending"]
        assert not left, left
    # A hard reset under TLS (RST): the same.
    host, port = ftp.makepasv()
    raw = socket.create_connection((host, port), TIMEOUT)
    resp = ftp.sendcmd("STOR reset.bin")
    assert resp[:3] in ("150", "125"), resp
    conn = ftp.context.wrap_socket(raw, server_hostname=HOST, **kw)
    conn.sendall(payload(256 * 1024, 3))
    import struct
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.shutdown(socket.SHUT_RDWR)
    conn.close()
    c = code_of(ftp.getresp)
    # An RST may discard what was queued: "data connection failed" (425) is as
    # good as 426/451 here, as long as nothing is committed.
    assert c in (425, 426, 451), "upload reset under TLS answered %d" % c
    assert size_missing(ftp, "reset.bin")
    # Control: a proper close_notify commits.
    data = payload(1024 * 1024, 4)
    put(ftp, "complete.bin", data)
    assert sha(get(ftp, "complete.bin")) == sha(data)
    ftp.quit()


def test_session_reuse_required():
    """With require_session_reuse a PROT P data connection that does not resume
    the control connection's TLS session gets no data (425/522/426); one that
    resumes works."""
    good = client(cls=ReusingFTP_TLS)
    data = payload(200_000, 5)
    put(good, "reuse.bin", data)
    # A fresh TLS session on the data connection.
    bad = client(cls=ftplib.FTP_TLS)
    host, port = bad.makepasv()
    raw = socket.create_connection((host, port), TIMEOUT)
    resp = bad.sendcmd("RETR reuse.bin")
    got = b""
    final = 0
    if resp[:3] in ("150", "125"):
        try:
            conn = bad.context.wrap_socket(raw, server_hostname=HOST)
            print("  non-resumed data handshake completed; session_reused =", conn.session_reused)
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                got += b
        except (ssl.SSLError, OSError) as e:
            print("  non-resumed data connection failed as expected:", e)
        final = code_of(bad.getresp)
    else:
        final = int(resp[:3])
    print("  non-resumed RETR: final reply %d, %d bytes" % (final, len(got)))
    assert final in (425, 426, 450, 451, 522, 534), "non-resumed data answered %d" % final
    assert len(got) < len(data), "data delivered over a non-resumed TLS session"
    # Upload on a non-resumed session: nothing committed.
    host, port = bad.makepasv()
    raw = socket.create_connection((host, port), TIMEOUT)
    resp = bad.sendcmd("STOR stolen.bin")
    if resp[:3] in ("150", "125"):
        try:
            conn = bad.context.wrap_socket(raw, server_hostname=HOST)
            conn.sendall(b"x" * 1000)
            conn.unwrap()
        except (ssl.SSLError, OSError):
            pass
        final = code_of(bad.getresp)
    else:
        final = int(resp[:3])
    assert final != 226, "upload over a non-resumed session committed"
    assert size_missing(good, "stolen.bin")
    # The control session is still usable, and resumption works on it.
    assert bad.voidcmd("NOOP").startswith("200")
    # The reusing client really resumed, and gets its data.
    host, port = good.makepasv()
    raw = socket.create_connection((host, port), TIMEOUT)
    assert good.sendcmd("RETR reuse.bin")[:3] in ("150", "125")
    conn = good.context.wrap_socket(raw, server_hostname=HOST, session=good.sock.session)
    assert conn.session_reused, "client could not resume the control session"
    buf = recv_all(conn)
    conn.close()
    assert good.voidresp().startswith("226")
    assert sha(bytes(buf)) == sha(data)
    good.quit()


def reply_of(fn, *args):
    """Runs an ftplib call; its reply or error text."""
    try:
        return fn(*args)
    except ftplib.all_errors as e:
        return str(e)


NOT_RESUMED = "TLS session of the control connection not resumed"


def connect_victim():
    """A logged-in, session-reusing PROT P client (implicit when
    FTPS_IMPLICIT_PORT is set)."""
    port = os.environ.get("FTPS_IMPLICIT_PORT")
    if not port:
        return client(cls=ReusingFTP_TLS)
    ftp = ImplicitFTP_TLS(context=context())
    ftp.encoding = "utf-8"
    ftp.connect(HOST, int(port), timeout=TIMEOUT)
    assert ftp.login(USER, PASS).startswith("230")
    assert ftp.voidcmd("PBSZ 0").startswith("200")
    assert ftp.voidcmd("PROT P").startswith("200")
    ftp._prot_p = True
    return ftp


def attacker_session():
    """The attacker's own control connection, never logged in: TLS (AUTH TLS or
    implicit) and a NOOP, so TLS 1.3 tickets have arrived; returns (ftp, session)."""
    port = os.environ.get("FTPS_IMPLICIT_PORT")
    if port:
        att = ImplicitFTP_TLS(context=context())
        att.connect(HOST, int(port), timeout=TIMEOUT)
    else:
        att = ftplib.FTP_TLS(context=context())
        att.connect(HOST, PORT, timeout=TIMEOUT)
        assert att.auth().startswith("234")
    assert att.voidcmd("NOOP").startswith("200")
    session = att.sock.session
    assert session is not None
    if att.sock.version() == "TLSv1.3":
        assert session.has_ticket, "no TLS 1.3 ticket on the attacker's control connection"
    return att, session


def steal(victim, ctx, verb, session):
    """Connects to the victim's passive port first (same IP: NAT) and hands
    `session` to the data handshake while the victim runs `verb`; returns
    (victim's final reply, bytes the attacker received, the attacker's session
    after the handshake or None, whether it resumed)."""
    host, port = victim.makepasv()
    raw = socket.create_connection((host, port), TIMEOUT)
    resp = victim.sendcmd(verb)
    assert resp[:3] in ("150", "125"), resp
    got = b""
    after = None
    reused = False
    try:
        kw = {"session": session} if session is not None else {}
        conn = ctx.wrap_socket(raw, server_hostname=HOST, **kw)
        reused = conn.session_reused
        after = conn.session
        conn.settimeout(TIMEOUT)
        if verb.startswith("STOR"):
            conn.sendall(b"attacker content\n" * 5000)
            conn.unwrap()
        else:
            got = recv_all(conn)
        conn.close()
    except (ssl.SSLError, OSError) as e:
        print("  attacker's data connection ended:", e)
    final = reply_of(victim.getresp)
    print("  %s with attacker session: reused=%s, final %r, %d bytes" % (verb, reused, final.strip(), len(got)))
    return final, got, after, reused


def test_foreign_session():
    """A data connection that resumes another control connection's TLS session
    (the attacker's own, from AUTH TLS without login, same source IP) gets
    nothing and injects nothing: 425 with the reason, for RETR and STOR; nor
    does a session the attacker obtained on a refused data connection work
    later. The victim's own resumption keeps working."""
    victim = connect_victim()
    if TLS:
        assert victim.sock.version() == "TLSv1." + TLS[-1], victim.sock.version()
    secret = payload(300_000, 21)
    put(victim, "secret.bin", secret)
    att, session = attacker_session()
    final, got, _, reused = steal(victim, att.context, "RETR secret.bin", session)
    assert not reused, "the victim's data connection resumed the attacker's session"
    assert got == b"", "attacker received %d bytes of the victim's download" % len(got)
    assert final.startswith("425") and NOT_RESUMED in final, final
    final, _, _, reused = steal(victim, att.context, "STOR upload.bin", session)
    assert not reused
    assert final.startswith("425") and NOT_RESUMED in final, final
    assert size_missing(victim, "upload.bin"), "attacker's upload was stored"
    if ROOT:
        assert not os.path.exists(on_disk("upload.bin"))
    # A full handshake on the victim's data port (refused), then resuming
    # whatever session it produced on the next one.
    final, got, after, _ = steal(victim, att.context, "RETR secret.bin", None)
    assert final.startswith("425") and got == b"", (final, len(got))
    final, got, _, reused = steal(victim, att.context, "RETR secret.bin", after)
    assert not reused and got == b"", "a session from a refused data connection resumed"
    assert final.startswith("425"), final
    # The victim's own session: uploads and downloads still work, resumed.
    mine = payload(200_000, 22)
    put(victim, "mine.bin", mine)
    assert sha(get(victim, "mine.bin")) == sha(mine)
    assert sha(get(victim, "secret.bin")) == sha(secret)
    att.close()
    victim.quit()


def test_plaintext_refused():
    """Required mode: a plain ftplib.FTP login gets 530 (USER or PASS)."""
    ftp = ftplib.FTP()
    ftp.connect(HOST, PORT, timeout=TIMEOUT)
    try:
        ftp.login(USER, PASS)
    except ftplib.error_perm as e:
        assert str(e).startswith("530"), e
    else:
        raise AssertionError("plaintext login accepted in required mode")
    ftp.close()


def test_implicit():
    """Implicit FTPS on its own port: TLS from the first byte, then login and a
    PROT P round trip with hash check; a plaintext client gets no FTP greeting."""
    port = int(os.environ["FTPS_IMPLICIT_PORT"])
    ftp = ImplicitFTP_TLS(context=context())
    ftp.encoding = "utf-8"
    welcome = ftp.connect(HOST, port, timeout=TIMEOUT)
    assert welcome.startswith("220"), welcome
    assert isinstance(ftp.sock, ssl.SSLSocket)
    assert ftp.login(USER, PASS).startswith("230")
    assert ftp.voidcmd("PBSZ 0").startswith("200")
    assert ftp.voidcmd("PROT P").startswith("200")
    ftp._prot_p = True
    data = payload(1024 * 1024 + 3, 6)
    put(ftp, "implicit.bin", data)
    assert sha(get(ftp, "implicit.bin")) == sha(data)
    if ROOT:
        with open(on_disk("implicit.bin"), "rb") as f:
            assert sha(f.read()) == sha(data)
    ftp.quit()
    # Plaintext to the implicit port: never a cleartext 220.
    s = socket.create_connection((HOST, port), TIMEOUT)
    s.settimeout(3)
    try:
        s.sendall(b"USER " + USER.encode() + b"\r\n")
        first = s.recv(100)
    except OSError:
        first = b""
    s.close()
    assert not first.startswith(b"220"), first


def peer_fingerprint():
    ftp = ftplib.FTP_TLS(context=context(verify=False))
    ftp.connect(HOST, PORT, timeout=TIMEOUT)
    ftp.auth()
    fp = hashlib.sha256(ftp.sock.getpeercert(binary_form=True)).hexdigest()
    try:
        ftp.quit()
    except ftplib.all_errors:
        pass
    return fp


def file_fingerprint(path):
    import subprocess

    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", path],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.strip().split("=")[-1].replace(":", "").lower()


def replace_atomically(src, dst):
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def test_cert_reload():
    """Replace cert+key, SIGHUP (or wait for the file poll): new connections see
    the new certificate; a session opened before keeps working, transfers
    included."""
    old_fp = file_fingerprint(os.environ["FTPS_CERT_FILE"])
    new_fp = file_fingerprint(os.environ["FTPS_NEW_CERT"])
    assert old_fp != new_fp
    assert peer_fingerprint() == old_fp
    # A session that lives through the reload (trusts the old certificate only).
    old = client(cls=ReusingFTP_TLS)
    data = payload(500_000, 7)
    put(old, "before.bin", data)
    replace_atomically(os.environ["FTPS_NEW_KEY"], os.environ["FTPS_KEY_FILE"])
    replace_atomically(os.environ["FTPS_NEW_CERT"], os.environ["FTPS_CERT_FILE"])
    how = os.environ.get("FTPS_RELOAD", "sighup")
    if how == "sighup":
        os.kill(int(os.environ["GATE_PID"]), signal.SIGHUP)
    t0 = time.time()
    deadline = t0 + (10 if how == "sighup" else 20)
    seen = old_fp
    while time.time() < deadline:
        seen = peer_fingerprint()
        if seen == new_fp:
            break
        time.sleep(0.2)
    print("  new certificate served after %.1f s (%s)" % (time.time() - t0, how))
    assert seen == new_fp, "still serving the old certificate after %s" % how
    # The old session: control and data still work.
    assert old.voidcmd("NOOP").startswith("200")
    assert sha(get(old, "before.bin")) == sha(data)
    put(old, "after.bin", data)
    old.quit()
    # A new client verifying against the new certificate.
    global CA
    CA = [os.environ["FTPS_NEW_CERT"]]
    ftp = client(cls=ReusingFTP_TLS)
    assert sha(get(ftp, "after.bin")) == sha(data)
    ftp.quit()


# --------------------------------------------------------------------------


def main():
    names = sys.argv[1:]
    failed = []
    for name in names:
        fn = globals().get(name)
        if fn is None:
            print("no such test:", name)
            failed.append(name)
            continue
        t = time.time()
        try:
            fn()
            print("ok   %s (%.2f s)" % (name, time.time() - t))
        except Exception:
            print("FAIL %s" % name)
            traceback.print_exc(file=sys.stdout)
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
        sys.exit(1)
    print("all ftps tests passed")


if __name__ == "__main__":
    main()
