"""Idle-session memory, fresh-client latency and memory after load, for one
running ftpgate (see bench/idle-rss.sh, which starts it).

  python3 bench/idle_rss.py PID PORT SESSIONS SOAK

1. baseline RSS; 2. SESSIONS idle logged-in control connections (asyncio, no
threads) -> RSS delta, then a fresh client (connect, USER/PASS, NLST over
EPSV) timed 7 times (median); 3. all closed; SOAK concurrent sessions each
STOR + RETR 256 KiB; 4. RSS every 10 s for 60 s after the soak.
"""
import asyncio, ftplib, io, os, statistics, sys, time

pid, port, sessions, soak = (int(a) for a in sys.argv[1:5])
USER, PASS = sys.argv[5], sys.argv[6]


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def reply(r):
    line = await r.readline()
    code = line[:3]
    while line[3:4] == b"-":
        line = await r.readline()
        while not line.startswith(code + b" "):
            line = await r.readline()
    return line


async def idle_session(held, sem):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await reply(r)
        w.write(f"USER {USER}\r\n".encode()); await w.drain(); await reply(r)
        w.write(f"PASS {PASS}\r\n".encode()); await w.drain()
        line = await reply(r)
        if not line.startswith(b"230"):
            raise SystemExit(f"login failed: {line!r}")
        held.append(w)


def fresh_client():
    t = time.perf_counter()
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=30)
    f.login(USER, PASS)
    f.nlst()
    took = time.perf_counter() - t
    f.quit()
    return took


def soak_one(data):
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=60)
    f.login(USER, PASS)
    name = f"s{os.getpid()}-{id(data)}-{time.perf_counter_ns()}"
    f.storbinary(f"STOR {name}", io.BytesIO(data))
    out = io.BytesIO()
    f.retrbinary(f"RETR {name}", out.write)
    assert out.getvalue() == data
    f.delete(name)
    f.quit()


async def main():
    base = rss_kib()
    print(f"baseline RSS: {base / 1024:.1f} MiB")
    held = []
    sem = asyncio.Semaphore(200)
    t = time.perf_counter()
    await asyncio.gather(*(idle_session(held, sem) for _ in range(sessions)))
    await asyncio.sleep(2)
    up = rss_kib()
    print(f"{sessions} idle logged-in sessions opened in {time.perf_counter() - t:.1f} s")
    print(f"RSS with them: {up / 1024:.1f} MiB (+{(up - base) / 1024:.1f} MiB, "
          f"{(up - base) * 1024 / max(sessions, 1):.0f} B/session)")
    loop = asyncio.get_running_loop()
    times = [await loop.run_in_executor(None, fresh_client) for _ in range(7)]
    print(f"fresh client (connect, login, NLST) with them open: median "
          f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    # The server trims free heap pages every 10 s when holes are many (resources.rs).
    await asyncio.sleep(12)
    later = rss_kib()
    print(f"RSS with them 12 s later: {later / 1024:.1f} MiB (+{(later - base) / 1024:.1f} MiB, "
          f"{(later - base) * 1024 / max(sessions, 1):.0f} B/session)")
    for w in held:
        w.close()
    await asyncio.sleep(3)
    print(f"RSS after closing them: {rss_kib() / 1024:.1f} MiB")
    if soak:
        data = os.urandom(256 * 1024)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(soak) as ex:
            list(ex.map(lambda _: soak_one(data), range(soak)))
        print(f"RSS right after a {soak}-session soak (STOR+RETR 256 KiB each): "
              f"{rss_kib() / 1024:.1f} MiB")
        for s in range(10, 61, 10):
            await asyncio.sleep(10)
            print(f"  {s} s later: {rss_kib() / 1024:.1f} MiB")
    print(f"idle baseline was {base / 1024:.1f} MiB")


asyncio.run(main())
