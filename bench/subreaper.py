"""Runs argv[1:] as a child and adopts and reaps its orphans (PR_SET_CHILD_SUBREAPER), so
the CPU time of a server that forks per session and whose session processes outlive
their parent (vsftpd) is all accounted to this process and the server. SIGTERM is
passed on to the child. Used by bench/bench.sh and bench/lib.sh (start_vsftpd)."""
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
child = os.fork()
if child == 0:
    os.execv(sys.argv[1], sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
