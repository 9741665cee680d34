/* Diagnosis aid for bench/small-files.sh (not part of ftpgate): an LD_PRELOAD shim that
 * sets TCP_NODELAY on every socket the process accepts, i.e. on ftpgate's control
 * connections (its data connections already have it). Shows what the small-files
 * numbers are without the Nagle/delayed-ACK stall of the final reply.
 *
 *   gcc -shared -fPIC -O2 -o nodelay-shim.so bench/nodelay-shim.c -ldl
 *   BENCH_GATE_ENV="LD_PRELOAD=$PWD/nodelay-shim.so" bash bench/small-files.sh local
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd) {
    int one = 1;
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = dlsym(RTLD_NEXT, "accept4");
    int r = real(fd, addr, len, flags);
    nodelay(r);
    return r;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "accept");
    int r = real(fd, addr, len);
    nodelay(r);
    return r;
}
