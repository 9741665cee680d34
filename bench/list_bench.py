"""Driver for bench/list-bench.sh (not meant to be run alone).

  python3 list_bench.py fill ENDPOINT BUCKET PREFIX COUNT THREADS
  python3 list_bench.py run  ENDPOINT BUCKET PREFIX COUNT RUNS CMDS FTP_PORT USER PASS GATE_PID MOTO_PID OUT_TSV

fill: raw unsigned HTTP PUTs with keep-alive (moto checks no signatures), THREADS
connections in parallel, keys PREFIX/f0000000 ... ; prints the fill rate.

run: RUNS rounds; in each, the contenders in turn (order rotating per round):
  direct: boto3 list_objects_v2 paginator (Prefix=PREFIX/, Delimiter='/') from an
          already connected client;
  MLSD / NLST / LIST: ftplib, logged in and TYPE I done beforehand; timed from sending
          the command (PASV/EPSV included) to the final 226.
Records time to first entry, total, entries (complete, no duplicates checked), client CPU,
moto CPU, and for ftpgate its VmRSS before and VmHWM after (HWM reset just before the
command via /proc/PID/clear_refs, i.e. after the login's argon2 allocation).
"""
import ftplib
import http.client
import os
import sys
import threading
import time


def fill(endpoint, bucket, prefix, count, threads):
    host, port = endpoint.replace("http://", "").split(":")
    done = [0]
    lock = threading.Lock()

    def worker(idx):
        conn = http.client.HTTPConnection(host, int(port))
        n = 0
        for i in range(idx, count, threads):
            body = b"x" * (i % 100 + 1)
            conn.request("PUT", f"/{bucket}/{prefix}/f{i:07d}", body=body,
                         headers={"Content-Length": str(len(body))})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"PUT f{i:07d}: HTTP {r.status}")
            n += 1
        with lock:
            done[0] += n

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    print(f"{done[0]}\t{dt:.2f}\t{done[0] / dt:.0f}")
    assert done[0] == count


def kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in parts[11:15])


TCK = os.sysconf("SC_CLK_TCK")


def run(endpoint, bucket, prefix, count, runs, cmds, ftp_port, user, password, gate_pid,
        moto_pid, out):
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing",
                      config=Config(s3={"addressing_style": "path"}))
    s3.head_bucket(Bucket=bucket)
    expected = {f"f{i:07d}" for i in range(count)}

    def direct():
        pag = s3.get_paginator("list_objects_v2")
        t0 = time.monotonic()
        first = None
        names = []
        pages = []
        tp = t0
        for page in pag.paginate(Bucket=bucket, Prefix=prefix + "/", Delimiter="/"):
            now = time.monotonic()
            pages.append(now - tp)
            tp = now
            contents = page.get("Contents", [])
            if contents and first is None:
                first = now - t0
            names.extend(o["Key"].rsplit("/", 1)[1] for o in contents)
        total = time.monotonic() - t0
        return first, total, names, {"pages": len(pages), "page_first": pages[0],
                                     "page_last": pages[-1]}

    def ftp_list(cmd):
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", ftp_port)
        ftp.login(user, password)
        ftp.voidcmd("TYPE I")
        rss0 = kib(gate_pid, "VmRSS")
        with open(f"/proc/{gate_pid}/clear_refs", "w") as f:
            f.write("5")
        t0 = time.monotonic()
        conn = ftp.transfercmd(f"{cmd} /{prefix}")
        first = None
        buf = b""
        nbytes = 0
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            if first is None:
                first = time.monotonic() - t0
            nbytes += len(chunk)
            buf += chunk
        conn.close()
        ftp.voidresp()
        total = time.monotonic() - t0
        hwm = kib(gate_pid, "VmHWM")
        ftp.quit()
        lines = [l for l in buf.decode("utf-8").split("\r\n") if l]
        if cmd == "MLSD":
            names = [l.split("; ", 1)[1] if "; " in l else l.split(" ", 1)[1] for l in lines]
            names = [n for n in names if n not in (".", "..")]
        elif cmd == "NLST":
            names = [l.rsplit("/", 1)[-1] for l in lines]
        else:  # LIST: name is the last field
            names = [l.split()[-1] for l in lines if not l.startswith("total")]
        return first, total, names, {"rss0": rss0, "hwm": hwm, "bytes": nbytes}

    contenders = ["direct"] + cmds
    with open(out, "a") as o:
        for r in range(1, runs + 1):
            k = (r - 1) % len(contenders)
            order = contenders[k:] + contenders[:k]
            for c in order:
                c0 = time.process_time()
                m0 = ticks(moto_pid)
                g0 = ticks(gate_pid)
                first, total, names, extra = direct() if c == "direct" else ftp_list(c)
                cpu = time.process_time() - c0
                mcpu = (ticks(moto_pid) - m0) / TCK
                gcpu = (ticks(gate_pid) - g0) / TCK
                ok = len(names) == count and set(names) == expected
                dups = len(names) - len(set(names))
                if not ok:
                    print(f"{c}: {len(names)} names, {dups} duplicates, "
                          f"{len(expected - set(names))} missing", file=sys.stderr)
                    sys.exit(1)
                row = [c, r, f"{first:.3f}", f"{total:.3f}", len(names), f"{cpu:.2f}",
                       f"{mcpu:.2f}", f"{gcpu:.2f}" if c != "direct" else "",
                       extra.get("rss0", ""), extra.get("hwm", ""), extra.get("pages", ""),
                       f"{extra['page_first']:.3f}" if "page_first" in extra else "",
                       f"{extra['page_last']:.3f}" if "page_last" in extra else ""]
                o.write("\t".join(str(x) for x in row) + "\n")
                o.flush()
                print("\t".join(str(x) for x in row), file=sys.stderr)


if __name__ == "__main__":
    a = sys.argv
    if a[1] == "fill":
        fill(a[2], a[3], a[4], int(a[5]), int(a[6]))
    else:
        run(a[2], a[3], a[4], int(a[5]), int(a[6]), a[7].split(","), int(a[8]), a[9],
            a[10], int(a[11]), int(a[12]), a[13])
