#!/usr/bin/env python3
"""End-to-end suite for ftpgate driven by Python's ftplib.

Run by tests/client_ftplib.rs. Connection details come from the environment:
FTP_HOST, FTP_PORT, FTP_USER, FTP_PASS and FTP_ROOT (the local backend's root
directory on disk; empty for the memory backend, which disables disk checks).
Every check asserts reply codes or content; the script exits 1 if any test fails.
"""

import ftplib
import hashlib
import io
import os
import random
import re
import socket
import sys
import time
import traceback

HOST = os.environ["FTP_HOST"]
PORT = int(os.environ["FTP_PORT"])
USER = os.environ["FTP_USER"]
PASS = os.environ["FTP_PASS"]
ROOT = os.environ.get("FTP_ROOT") or None
TIMEOUT = 15


class Client(ftplib.FTP):
    """ftplib.FTP whose active mode listens on 127.0.0.1 only (ftplib binds all
    interfaces) and can announce itself with EPRT instead of PORT."""

    use_eprt = False

    def makeport(self):
        sock = socket.create_server(("127.0.0.1", 0), backlog=1)
        port = sock.getsockname()[1]
        if self.use_eprt:
            resp = self.voidcmd("EPRT |1|127.0.0.1|%d|" % port)
            assert resp.startswith("200"), resp
        else:
            resp = self.sendport("127.0.0.1", port)
            assert resp.startswith("200"), resp
        sock.settimeout(TIMEOUT)
        return sock


def connect(login=True):
    ftp = Client()
    ftp.encoding = "utf-8"
    welcome = ftp.connect(HOST, PORT, timeout=TIMEOUT)
    assert welcome.startswith("220"), welcome
    if login:
        resp = ftp.login(USER, PASS)
        assert resp.startswith("230"), resp
    return ftp


def payload(n, seed):
    return random.Random(seed).randbytes(n)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def put(ftp, name, data, cmd="STOR", rest=None):
    resp = ftp.storbinary("%s %s" % (cmd, name), io.BytesIO(data), rest=rest)
    assert resp.startswith("226"), resp
    return resp


def get(ftp, name, rest=None):
    buf = bytearray()
    resp = ftp.retrbinary("RETR " + name, buf.extend, rest=rest)
    assert resp.startswith("226"), resp
    return bytes(buf)


def expect_error(code, fn, *args, **kw):
    """Calls fn and asserts that it fails with reply `code` (a string like '550'
    or a class like '5')."""
    try:
        r = fn(*args, **kw)
    except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply) as e:
        msg = str(e)
        assert msg.startswith(code), "expected %s, got %r" % (code, msg)
        return msg
    raise AssertionError("expected a %s reply, got success %r" % (code, r))


def data_cmd(ftp, cmd):
    """PASV, connect, send `cmd`; returns (data socket, preliminary reply)."""
    host, port = ftp.makepasv()
    conn = socket.create_connection((host, port), TIMEOUT)
    try:
        resp = ftp.sendcmd(cmd)
    except Exception:
        conn.close()
        raise
    assert resp.startswith("1"), resp
    return conn, resp


def disk(path):
    """Host path of a server path, or None without a local root."""
    if ROOT is None:
        return None
    return os.path.join(ROOT, path.lstrip("/"))


def assert_disk_sha(path, data):
    p = disk(path)
    if p is None:
        return
    with open(p, "rb") as f:
        got = f.read()
    assert sha(got) == sha(data), "disk content of %s differs (%d vs %d bytes)" % (p, len(got), len(data))


def mkdir_p(ftp, path):
    resp = ftp.sendcmd("MKD " + path)
    assert resp.startswith("257"), resp


SPECIAL = ["sp ace.txt", "ü日本.txt", "hash#1.txt", "pct%41.txt", "mix ü #%20 日.bin"]


# --------------------------------------------------------------------------


def test_login():
    ftp = connect(login=False)
    expect_error("530", ftp.sendcmd, "PWD")
    expect_error("530", ftp.login, USER, "wrong password")
    resp = ftp.login(USER, PASS)
    assert resp.startswith("230"), resp
    assert ftp.sendcmd("PWD").startswith('257 "/"'), "fresh session starts at /"
    assert ftp.quit().startswith("221")


def test_info_commands():
    ftp = connect()
    assert ftp.sendcmd("SYST") == "215 UNIX Type: L8"
    feat = ftp.sendcmd("FEAT")
    lines = feat.splitlines()
    assert lines[0].startswith("211-") and lines[-1].startswith("211 "), feat
    feats = [l.strip().upper() for l in lines[1:-1]]
    words = {f.split(" ")[0] for f in feats}
    # FTP_NO_FEATURES: what this backend must NOT advertise (S3: MFMT).
    absent = [f for f in os.environ.get("FTP_NO_FEATURES", "").upper().split(",") if f]
    for want in ["MLST", "SIZE", "MDTM", "EPSV", "UTF8", "MFMT", "EPRT", "PASV"]:
        if want in absent:
            assert want not in words, "FEAT offers %s: %r" % (want, feat)
        else:
            assert want in words, "FEAT lacks %s: %r" % (want, feat)
    assert "REST STREAM" in feats, feat
    mlst = [f for f in feats if f.startswith("MLST ")][0]
    for fact in ["TYPE", "SIZE", "MODIFY", "PERM"]:
        assert fact in mlst, mlst
    assert ftp.sendcmd("OPTS UTF8 ON").startswith("200")
    h = ftp.sendcmd("HELP")
    assert h.startswith("214"), h
    for verb in ["RETR", "STOR", "MLSD", "EPSV"]:
        assert verb in h, h
    assert ftp.sendcmd("HELP RETR").startswith("214")
    st = ftp.sendcmd("STAT")
    assert st.startswith("211-") and st.splitlines()[-1].startswith("211 "), st
    assert USER in st, st
    assert ftp.sendcmd("NOOP").startswith("200")
    assert ftp.sendcmd("ALLO 1000").startswith("202")
    expect_error("502", ftp.sendcmd, "FOOBAR")
    expect_error("501", ftp.sendcmd, "REST abc")
    assert ftp.sendcmd("REST 0").startswith("350")
    assert ftp.quit().startswith("221")


def test_type_mode_stru():
    ftp = connect()
    for t in ["TYPE I", "TYPE A", "TYPE L 8", "type i", "TYPE A N"]:
        r = ftp.sendcmd(t)
        assert r.startswith("200"), (t, r)
    assert ftp.sendcmd("MODE S").startswith("200")
    expect_error("504", ftp.sendcmd, "MODE B")
    assert ftp.sendcmd("STRU F").startswith("200")
    expect_error("504", ftp.sendcmd, "STRU R")
    # TYPE A without ascii_conversion is still byte for byte.
    data = b"line1\r\nline2\nline3\r\x00\xff\n"
    put(ftp, "/ascii.bin", data)
    ftp.voidcmd("TYPE A")
    conn, _ = data_cmd(ftp, "RETR /ascii.bin")
    got = b""
    while True:
        b = conn.recv(65536)
        if not b:
            break
        got += b
    conn.close()
    assert ftp.voidresp().startswith("226")
    assert got == data, got
    ftp.voidcmd("TYPE I")
    ftp.delete("/ascii.bin")
    ftp.quit()


def test_directories():
    ftp = connect()
    base = "/py dirs ü日本 #1 %x"
    r = ftp.sendcmd("MKD " + base)
    assert r.startswith('257 "%s"' % base), r
    if ROOT:
        assert os.path.isdir(disk(base)), disk(base)
    expect_error("550", ftp.sendcmd, "MKD " + base)
    r = ftp.sendcmd("XMKD %s/sub" % base)
    assert r.startswith('257 "%s/sub"' % base), r
    assert ftp.sendcmd("CWD " + base).startswith("250")
    assert ftp.sendcmd("PWD").startswith('257 "%s"' % base)
    assert ftp.sendcmd("XPWD").startswith('257 "%s"' % base)
    assert ftp.sendcmd("XCWD sub").startswith("250")
    assert ftp.pwd() == base + "/sub"
    r = ftp.sendcmd("CDUP")
    assert r[:3] in ("200", "250"), r
    assert ftp.pwd() == base
    ftp.cwd("sub")
    r = ftp.sendcmd("XCUP")
    assert r[:3] in ("200", "250"), r
    assert ftp.pwd() == base
    ftp.sendcmd("CDUP")
    assert ftp.pwd() == "/"
    ftp.sendcmd("CDUP")
    assert ftp.pwd() == "/", "CDUP at the root stays at the root"
    expect_error("550", ftp.sendcmd, "CWD /does/not/exist")
    # Non-empty directory cannot be removed.
    put(ftp, base + "/sub/f.txt", b"x")
    expect_error("550", ftp.sendcmd, "RMD %s/sub" % base)
    expect_error("550", ftp.sendcmd, "XRMD %s/sub" % base)
    assert ftp.sendcmd("DELE %s/sub/f.txt" % base).startswith("250")
    expect_error("550", ftp.sendcmd, "DELE %s/sub/f.txt" % base)
    assert ftp.sendcmd("XRMD %s/sub" % base).startswith("250")
    assert ftp.sendcmd("RMD " + base).startswith("250")
    expect_error("550", ftp.sendcmd, "RMD " + base)
    if ROOT:
        assert not os.path.exists(disk(base))
    assert base not in ftp.nlst("/")
    ftp.quit()


def test_rename():
    ftp = connect()
    ftp.mkd("/ren")
    a, b = payload(1000, 1), payload(2000, 2)
    put(ftp, "/ren/a.bin", a)
    put(ftp, "/ren/b.bin", b)
    assert ftp.sendcmd("RNFR /ren/a.bin").startswith("350")
    assert ftp.sendcmd("RNTO /ren/ü 日本 #%.bin").startswith("250")
    assert ftp.size("/ren/ü 日本 #%.bin") == 1000
    expect_error("550", ftp.size, "/ren/a.bin")
    # Rename over an existing file replaces it.
    assert ftp.sendcmd("RNFR /ren/ü 日本 #%.bin").startswith("350")
    assert ftp.sendcmd("RNTO /ren/b.bin").startswith("250")
    assert sha(get(ftp, "/ren/b.bin")) == sha(a)
    assert_disk_sha("/ren/b.bin", a)
    assert sorted(ftp.nlst("/ren")) == ["/ren/b.bin"], ftp.nlst("/ren")
    expect_error("550", ftp.sendcmd, "RNFR /ren/nothing")
    expect_error("503", ftp.sendcmd, "RNTO /ren/c.bin")
    # Directories can be renamed as well.
    ftp.mkd("/ren/d1")
    ftp.rename("/ren/d1", "/ren/d2")
    assert ftp.sendcmd("CWD /ren/d2").startswith("250")
    ftp.cwd("/")
    ftp.rmd("/ren/d2")
    ftp.delete("/ren/b.bin")
    ftp.rmd("/ren")
    ftp.quit()


def test_listings_and_metadata():
    ftp = connect()
    d = "/lists"
    ftp.mkd(d)
    files = {}
    for i, name in enumerate(["plain.txt"] + SPECIAL):
        files[name] = payload(100 * (i + 1), 10 + i)
        put(ftp, "%s/%s" % (d, name), files[name])
    ftp.mkd(d + "/subdir")
    put(ftp, d + "/empty", b"")
    files["empty"] = b""

    lines = []
    assert ftp.retrlines("LIST " + d, lines.append).startswith("226")
    assert len(lines) == len(files) + 1, lines
    for name, data in files.items():
        match = [l for l in lines if l.endswith(" " + name)]
        assert len(match) == 1, (name, lines)
        assert match[0].startswith("-"), match
        assert (" %d " % len(data)) in match[0], match
    sub = [l for l in lines if l.endswith(" subdir")]
    assert len(sub) == 1 and sub[0].startswith("d"), lines

    names = ftp.nlst(d)
    assert sorted(n.rsplit("/", 1)[-1] for n in names) == sorted(list(files) + ["subdir"]), names
    ftp.cwd(d)
    assert sorted(ftp.nlst()) == sorted(list(files) + ["subdir"])
    ftp.cwd("/")

    entries = dict(ftp.mlsd(d, facts=["type", "size", "modify", "perm"]))
    assert set(entries) - {".", ".."} == set(files) | {"subdir"}, entries
    for name, data in files.items():
        f = entries[name]
        assert f["type"] == "file", f
        assert int(f["size"]) == len(data), f
        assert re.fullmatch(r"\d{14}(\.\d+)?", f["modify"]), f
        assert "r" in f["perm"] and "w" in f["perm"], f
    assert entries["subdir"]["type"] == "dir", entries["subdir"]
    assert "l" in entries["subdir"]["perm"], entries["subdir"]

    r = ftp.sendcmd("MLST %s/plain.txt" % d)
    rl = r.splitlines()
    assert rl[0].startswith("250-") and rl[-1].startswith("250 ") and len(rl) == 3, r
    assert rl[1].startswith(" "), r
    assert "type=file;" in rl[1].lower() and "size=100;" in rl[1].lower(), r
    assert rl[1].endswith("%s/plain.txt" % d), r
    r = ftp.sendcmd("MLST " + d)
    assert "type=dir;" in r.lower(), r

    st = ftp.sendcmd("STAT " + d)
    sl = st.splitlines()
    assert sl[0].startswith("213-") and sl[-1].startswith("213 "), st
    for name in files:
        assert any(l.endswith(" " + name) for l in sl), (name, st)

    assert ftp.size(d + "/plain.txt") == 100
    assert ftp.size(d + "/empty") == 0
    assert ftp.size(d + "/" + SPECIAL[1]) == 300
    expect_error("550", ftp.size, d + "/missing")
    expect_error("550", ftp.size, d + "/subdir")
    r = ftp.sendcmd("MDTM %s/plain.txt" % d)
    assert re.fullmatch(r"213 \d{14}(\.\d+)?", r), r
    now = time.gmtime()
    assert r[4:8] == "%04d" % now.tm_year, r
    expect_error("550", ftp.sendcmd, "MDTM %s/missing" % d)

    r = ftp.sendcmd("MFMT 20200102030405 %s/plain.txt" % d)
    assert r.startswith("213") and "20200102030405" in r, r
    assert ftp.sendcmd("MDTM %s/plain.txt" % d) == "213 20200102030405"
    e = dict(ftp.mlsd(d, facts=["modify"]))
    assert e["plain.txt"]["modify"].startswith("20200102030405"), e["plain.txt"]
    if ROOT:
        assert int(os.path.getmtime(disk(d + "/plain.txt"))) == 1577934245
    ftp.quit()


def test_transfers_and_names():
    ftp = connect()
    ftp.mkd("/xfer")
    big = payload(5 * 1024 * 1024 + 7, 42)
    put(ftp, "/xfer/big.bin", big)
    assert ftp.size("/xfer/big.bin") == len(big)
    assert sha(get(ftp, "/xfer/big.bin")) == sha(big)
    assert_disk_sha("/xfer/big.bin", big)
    put(ftp, "/xfer/zero", b"")
    assert get(ftp, "/xfer/zero") == b""
    assert_disk_sha("/xfer/zero", b"")
    for i, name in enumerate(SPECIAL):
        data = payload(5000 + i, 100 + i)
        put(ftp, "/xfer/" + name, data)
        assert sha(get(ftp, "/xfer/" + name)) == sha(data), name
        assert_disk_sha("/xfer/" + name, data)
    names = set(ftp.nlst("/xfer"))
    for name in SPECIAL:
        assert "/xfer/" + name in names, (name, names)
    if ROOT:
        assert set(os.listdir(disk("/xfer"))) == set(SPECIAL) | {"big.bin", "zero"}, os.listdir(disk("/xfer"))
    expect_error("550", get, ftp, "/xfer/missing")
    expect_error("550", get, ftp, "/xfer")
    # Overwrite replaces the content.
    put(ftp, "/xfer/zero", b"now there is content")
    assert get(ftp, "/xfer/zero") == b"now there is content"
    ftp.quit()


def test_upload_invisible_until_complete():
    ftp = connect()
    other = connect()
    ftp.mkd("/vis")
    ftp.voidcmd("TYPE I")
    conn, _ = data_cmd(ftp, "STOR /vis/growing.bin")
    part = payload(300000, 7)
    conn.sendall(part)
    time.sleep(0.3)
    assert "/vis/growing.bin" not in other.nlst("/vis"), other.nlst("/vis")
    expect_error("550", other.size, "/vis/growing.bin")
    listing = []
    other.retrlines("LIST /vis", listing.append)
    assert listing == [], "temporary upload files must not be listed: %r" % listing
    if ROOT:
        assert not os.path.exists(disk("/vis/growing.bin"))
    rest = payload(100000, 8)
    conn.sendall(rest)
    conn.close()
    assert ftp.voidresp().startswith("226")
    assert other.size("/vis/growing.bin") == 400000
    assert sha(get(other, "/vis/growing.bin")) == sha(part + rest)
    other.quit()
    ftp.quit()


def test_stou():
    ftp = connect()
    ftp.mkd("/stou")
    ftp.cwd("/stou")
    ftp.voidcmd("TYPE I")
    data = payload(12345, 3)
    conn, resp = data_cmd(ftp, "STOU")
    assert resp.startswith("150") and "FILE:" in resp, resp
    name = resp.split("FILE:", 1)[1].strip()
    conn.sendall(data)
    conn.close()
    assert ftp.voidresp().startswith("226")
    assert sha(get(ftp, name)) == sha(data)
    # STOU with a name that exists picks a different one and leaves the old file.
    put(ftp, "taken.txt", b"original")
    conn, resp = data_cmd(ftp, "STOU taken.txt")
    assert "FILE:" in resp, resp
    name2 = resp.split("FILE:", 1)[1].strip()
    assert name2 != "taken.txt", resp
    conn.sendall(b"unique")
    conn.close()
    assert ftp.voidresp().startswith("226")
    assert get(ftp, "taken.txt") == b"original"
    assert get(ftp, name2) == b"unique"
    assert_disk_sha("/stou/" + name2, b"unique")
    ftp.quit()


def test_appe_and_rest():
    ftp = connect()
    ftp.mkd("/ar")
    a, b = payload(70000, 5), payload(90001, 6)
    put(ftp, "/ar/app.bin", a)
    put(ftp, "/ar/app.bin", b, cmd="APPE")
    assert sha(get(ftp, "/ar/app.bin")) == sha(a + b)
    assert_disk_sha("/ar/app.bin", a + b)
    put(ftp, "/ar/new-by-appe.bin", b, cmd="APPE")
    assert sha(get(ftp, "/ar/new-by-appe.bin")) == sha(b)

    data = payload(1024 * 1024 + 3, 9)
    put(ftp, "/ar/r.bin", data)
    for off in [0, 1, 123457, len(data) - 1, len(data)]:
        got = get(ftp, "/ar/r.bin", rest=off)
        assert sha(got) == sha(data[off:]), off
    try:
        get(ftp, "/ar/r.bin", rest=len(data) + 10)
        raise AssertionError("RETR beyond the end must fail")
    except ftplib.error_perm as e:
        assert str(e)[:1] == "5", e

    # Resume an upload: REST n + STOR keeps the first n bytes.
    cut = 300000
    put(ftp, "/ar/resume.bin", data[:cut])
    put(ftp, "/ar/resume.bin", data[cut:], rest=cut)
    assert ftp.size("/ar/resume.bin") == len(data)
    assert sha(get(ftp, "/ar/resume.bin")) == sha(data)
    assert_disk_sha("/ar/resume.bin", data)
    ftp.quit()


def start_big_retr(ftp, path):
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR " + path)
    got = conn.recv(65536)
    assert len(got) > 0
    return conn


def test_abor_inline():
    """ABOR sent as an ordinary command line during a RETR."""
    ftp = connect()
    big = payload(24 * 1024 * 1024, 11)
    put(ftp, "/abor-inline.bin", big)
    conn = start_big_retr(ftp, "/abor-inline.bin")
    ftp.putcmd("ABOR")
    first = ftp.getline()
    second = ftp.getline()
    conn.close()
    assert first.startswith("426"), (first, second)
    assert second.startswith("226"), (first, second)
    assert ftp.sendcmd("NOOP").startswith("200")
    assert get(ftp, "/abor-inline.bin", rest=len(big) - 10) == big[-10:]
    ftp.delete("/abor-inline.bin")
    ftp.quit()


def test_abor_ftplib():
    """ftplib's own abort(): ABOR\\r\\n sent with MSG_OOB (the final byte is TCP
    urgent data), as ftplib always does."""
    ftp = connect()
    big = payload(24 * 1024 * 1024, 12)
    put(ftp, "/abor.bin", big)
    conn = start_big_retr(ftp, "/abor.bin")
    ftp.sock.settimeout(8)
    try:
        first = ftp.abort()
    except socket.timeout:
        raise AssertionError("no reply to ftplib.abort() (ABOR\\r sent in band, \\n as TCP urgent data) within 8 s")
    conn.close()
    assert first.startswith("426"), first
    second = ftp.voidresp()
    assert second.startswith("226"), second
    assert ftp.sendcmd("NOOP").startswith("200")
    assert get(ftp, "/abor.bin", rest=len(big) - 10) == big[-10:]
    ftp.delete("/abor.bin")
    ftp.quit()


def test_passive_variants():
    ftp = connect()
    r = ftp.sendcmd("PASV")
    m = re.fullmatch(r"227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\).*", r)
    assert m, r
    assert [int(x) for x in m.groups()[:4]] == [127, 0, 0, 1], r
    port = int(m.group(5)) * 256 + int(m.group(6))
    assert port > 0
    r = ftp.sendcmd("EPSV")
    m = re.fullmatch(r"229 .*\(\|\|\|(\d+)\|\).*", r)
    assert m and int(m.group(1)) > 0, r
    assert ftp.sendcmd("EPSV 1").startswith("229")
    expect_error("522", ftp.sendcmd, "EPSV 2")
    data = payload(200000, 13)
    # PASV transfers (ftplib's default for IPv4).
    ftp.set_pasv(True)
    put(ftp, "/pasv.bin", data)
    assert sha(get(ftp, "/pasv.bin")) == sha(data)
    # EPSV transfers: ftplib uses EPSV when its address family is IPv6.
    ftp.af = socket.AF_INET6
    put(ftp, "/epsv.bin", data[::-1])
    assert sha(get(ftp, "/epsv.bin")) == sha(data[::-1])
    lines = []
    ftp.retrlines("LIST /", lines.append)
    assert any(l.endswith(" epsv.bin") for l in lines), lines
    ftp.af = socket.AF_INET
    ftp.delete("/pasv.bin")
    ftp.delete("/epsv.bin")
    ftp.quit()


def test_active_modes():
    ftp = connect()
    ftp.set_pasv(False)
    data = payload(3 * 1024 * 1024 + 1, 14)
    for use_eprt, name in [(False, "/port.bin"), (True, "/eprt.bin")]:
        ftp.use_eprt = use_eprt
        put(ftp, name, data)
        assert sha(get(ftp, name)) == sha(data), name
        assert_disk_sha(name, data)
        lines = []
        assert ftp.retrlines("LIST /", lines.append).startswith("226")
        assert any(l.endswith(" " + name[1:]) for l in lines), lines
        assert name in ftp.nlst("/") or name[1:] in ftp.nlst("/")
        ftp.delete(name)
    # RFC 2577: no data connections to third parties or privileged ports.
    expect_error("5", ftp.sendcmd, "PORT 127,0,0,2,200,10")
    expect_error("5", ftp.sendcmd, "PORT 127,0,0,1,0,21")
    expect_error("5", ftp.sendcmd, "PORT 10,1,2,3,200,10")
    expect_error("5", ftp.sendcmd, "EPRT |1|127.0.0.2|51200|")
    expect_error("5", ftp.sendcmd, "EPRT |1|127.0.0.1|80|")
    expect_error("5", ftp.sendcmd, "EPRT |2|::1|51200|")
    expect_error("501", ftp.sendcmd, "PORT 127,0,0")
    # The refused PORT left no endpoint behind: a transfer needs a new one.
    expect_error("425", ftp.sendcmd, "LIST /")
    assert ftp.sendcmd("NOOP").startswith("200")
    assert ftp.quit().startswith("221")


TESTS = [
    test_login,
    test_info_commands,
    test_type_mode_stru,
    test_directories,
    test_rename,
    test_listings_and_metadata,
    test_transfers_and_names,
    test_upload_invisible_until_complete,
    test_stou,
    test_appe_and_rest,
    test_abor_inline,
    test_abor_ftplib,
    test_passive_variants,
    test_active_modes,
]


def main():
    """Runs every test, or those named on the command line; FTP_SKIP holds a
    comma-separated list of tests to leave out."""
    only = sys.argv[1:]
    skip = set(filter(None, os.environ.get("FTP_SKIP", "").split(",")))
    unknown = (set(only) | skip) - {t.__name__ for t in TESTS}
    assert not unknown, "unknown tests: %s" % ", ".join(sorted(unknown))
    failed = []
    for t in TESTS:
        if (only and t.__name__ not in only) or t.__name__ in skip:
            continue
        start = time.time()
        try:
            t()
            print("ok    %-40s %.2fs" % (t.__name__, time.time() - start), flush=True)
        except Exception:
            failed.append(t.__name__)
            print("FAIL  %-40s %.2fs" % (t.__name__, time.time() - start), flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
    if failed:
        print("FAILED: " + ", ".join(failed))
        sys.exit(1)
    print("all ftplib tests passed")


if __name__ == "__main__":
    main()
