#define _GNU_SOURCE
#include "CShims.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <termios.h>
#include <sys/syscall.h>
#include <linux/openat2.h>

const uint32_t KILN_EPOLLIN = EPOLLIN;
const uint32_t KILN_EPOLLOUT = EPOLLOUT;
const uint32_t KILN_EPOLLERR = EPOLLERR;
const uint32_t KILN_EPOLLHUP = EPOLLHUP;
const uint32_t KILN_EPOLLRDHUP = EPOLLRDHUP;
const uint32_t KILN_EPOLLET = EPOLLET;
const uint32_t KILN_EPOLLEXCLUSIVE = EPOLLEXCLUSIVE;

int kiln_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int kiln_epoll_add(int epfd, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev = { .events = events, .data.u64 = data };
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int kiln_epoll_mod(int epfd, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev = { .events = events, .data.u64 = data };
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
}

int kiln_epoll_del(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int kiln_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) { events[i] = evs[i].events; data[i] = evs[i].data.u64; }
    return n;
}

int kiln_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
int kiln_eventfd_signal(int fd) { uint64_t one = 1; return (int)write(fd, &one, sizeof one); }
int kiln_eventfd_drain(int fd) { uint64_t v; return (int)read(fd, &v, sizeof v); }

int kiln_accept(int fd, char *addr, size_t addrlen) {
    struct sockaddr_storage ss; socklen_t len = sizeof ss;
    int c = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) return -errno;
    if (addr && addrlen > 0) {
        addr[0] = 0;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, addr, (socklen_t)addrlen);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, addr, (socklen_t)addrlen);
        }
    }
    return c;
}

int kiln_set_nodelay(int fd) { int one = 1; return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }
int kiln_set_reuse(int fd) { int one = 1; return setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); }
int kiln_set_v6only(int fd, int on) { return setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on); }

int kiln_listen(const char *host, int port, int backlog, int *bound_port) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo((host && host[0]) ? host : NULL, portstr, &hints, &res);
    if (rc != 0) return -EADDRNOTAVAIL;
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { err = errno; continue; }
        kiln_set_reuse(fd);
        if (ai->ai_family == AF_INET6) kiln_set_v6only(fd, 0);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) break;
        err = errno; close(fd); fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return -(err ? err : EADDRNOTAVAIL);
    struct sockaddr_storage ss; socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6) *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

ssize_t kiln_send(int fd, const void *buf, size_t len) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    return n < 0 ? -errno : n;
}

ssize_t kiln_writev2(int fd, const void *a, size_t alen, const void *b, size_t blen) {
    struct iovec iov[2] = { { (void *)a, alen }, { (void *)b, blen } };
    struct msghdr msg; memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov; msg.msg_iovlen = blen ? 2 : 1;
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    return n < 0 ? -errno : n;
}

long kiln_raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

void kiln_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

long kiln_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long pages = 0, rss = 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

uint64_t kiln_monotonic_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int kiln_errno(void) { return errno; }

/* Only async-signal-safe calls between fork and exec. */
static void child_reset_signals(void) {
    sigset_t none; sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL); signal(SIGINT, SIG_DFL); signal(SIGTERM, SIG_DFL);
}

int kiln_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
               int stdin_fd, int stdout_fd, int stderr_fd, int new_pgroup) {
    return kiln_spawn_fds(path, argv, envp, cwd, stdin_fd, stdout_fd, stderr_fd, new_pgroup, NULL, 0);
}

int kiln_spawn_fds(const char *path, char *const argv[], char *const envp[], const char *cwd,
                   int stdin_fd, int stdout_fd, int stderr_fd, int new_pgroup, const int *extra, int nextra) {
    if (nextra < 0 || nextra > 8) return -EINVAL;
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) != 0) return -errno;
    pid_t pid = fork();
    if (pid < 0) { int e = errno; close(errpipe[0]); close(errpipe[1]); return -e; }
    if (pid == 0) {
        child_reset_signals();
        if (new_pgroup) setpgid(0, 0);
        if (stdin_fd >= 0) dup2(stdin_fd, 0);
        if (stdout_fd >= 0) dup2(stdout_fd, 1);
        if (stderr_fd >= 0) dup2(stderr_fd, 2);
        /* Moved above the targets first, so an fd already numbered 3 or 4 is not overwritten early. */
        int high[8];
        for (int i = 0; i < nextra; i++) {
            high[i] = fcntl(extra[i], F_DUPFD_CLOEXEC, 64);
            if (high[i] < 0) { int e = errno; (void)!write(errpipe[1], &e, sizeof e); _exit(127); }
        }
        for (int i = 0; i < nextra; i++) {
            if (dup2(high[i], 3 + i) < 0) { int e = errno; (void)!write(errpipe[1], &e, sizeof e); _exit(127); }
        }
        if (cwd && chdir(cwd) != 0) { int e = errno; (void)!write(errpipe[1], &e, sizeof e); _exit(127); }
        execve(path, argv, envp);
        int e = errno; (void)!write(errpipe[1], &e, sizeof e); _exit(127);
    }
    close(errpipe[1]);
    int childerr = 0;
    ssize_t r = read(errpipe[0], &childerr, sizeof childerr);
    close(errpipe[0]);
    if (r == sizeof childerr) { int st; waitpid(pid, &st, 0); return -childerr; }
    return pid;
}

/* Like forkpty(3), but the master is close-on-exec from birth and the slave is opened only in the
 * child: with forkpty, a program another thread starts between its openpty and our fcntl inherits
 * the pair, and a leaked slave keeps the terminal from ever reporting its shell's exit. */
int kiln_forkpty(int *master_fd, const char *path, char *const argv[], char *const envp[],
                 const char *cwd, unsigned short cols, unsigned short rows) {
    struct winsize ws = { .ws_row = rows, .ws_col = cols };
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -errno;
    char slave[128];
    if (grantpt(m) != 0 || unlockpt(m) != 0 || ptsname_r(m, slave, sizeof slave) != 0) { int e = errno; close(m); return -e; }
    pid_t pid = fork();
    if (pid < 0) { int e = errno; close(m); return -e; }
    if (pid == 0) {
        child_reset_signals();
        setsid();
        int s = open(slave, O_RDWR);
        if (s < 0) _exit(126);
        ioctl(s, TIOCSCTTY, 0);
        ioctl(s, TIOCSWINSZ, &ws);
        dup2(s, 0); dup2(s, 1); dup2(s, 2);
        if (s > 2) close(s);
        if (cwd && chdir(cwd) != 0) _exit(126);
        execve(path, argv, envp);
        _exit(127);
    }
    fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
    *master_fd = m;
    return pid;
}

int kiln_set_winsize(int fd, unsigned short cols, unsigned short rows) {
    struct winsize ws = { .ws_row = rows, .ws_col = cols };
    return ioctl(fd, TIOCSWINSZ, &ws);
}

int kiln_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

/* glibc's memmem and memrchr are GNU extensions the Swift Glibc module does not export. */
const void *kiln_memmem(const void *hay, size_t hay_len, const void *needle, size_t needle_len) {
    return memmem(hay, hay_len, needle, needle_len);
}

const void *kiln_memrchr(const void *s, int c, size_t n) {
    return memrchr(s, c, n);
}

/* Two halves of the document at once: two independent chains of keys (each carries its last two
 * bytes) keep the core busy where one chain would wait on itself; both mark the same seen set, so a
 * trigram in both halves is counted once. Without a branch: every step stores its key's seen word
 * and an entry, and the entry counts only when its bit was new. Whether a trigram is new is a coin
 * toss for the branch predictor (about one byte in ten), and each miss waited on the seen word's
 * load from L2; the extra stores cost less (measured: 2.4 against 3.2 ns per byte). In C, not Swift:
 * Swift's version of this loop spilled its pointers to the stack. */
#define KILN_TRIGRAM_STEP(k, byte) do { \
        k = ((k << 7) | fold[(byte)]) & 0x1FFFFFu; \
        uint64_t w = seen[k >> 6], marked = w | (1ull << (k & 63)); \
        seen[k >> 6] = marked; \
        out[count] = ((uint64_t)k << 32) | doc64; \
        count += (size_t)((marked ^ w) >> (k & 63)); \
    } while (0)

size_t kiln_trigram_entries(const uint8_t *p, size_t n, const uint8_t *fold, uint64_t *seen,
                            uint64_t *out, size_t count, uint32_t doc) {
    if (n < 3) return count;
    const uint64_t doc64 = doc;
    /* Trigrams end at 2..<n: the first chain takes [2, mid), the second [mid, n). */
    size_t mid = 2 + (n - 2) / 2, j = mid;
    uint32_t k1 = (uint32_t)fold[p[0]] << 7 | fold[p[1]];
    uint32_t k2 = (uint32_t)fold[p[mid - 2]] << 7 | fold[p[mid - 1]];
    for (size_t i = 2; i < mid; i++, j++) {
        KILN_TRIGRAM_STEP(k1, p[i]);
        KILN_TRIGRAM_STEP(k2, p[j]);
    }
    for (; j < n; j++) KILN_TRIGRAM_STEP(k2, p[j]);
    return count;
}

#define KILN_AHEAD 16

void kiln_postings_count(const uint64_t *entries, size_t n, uint32_t *counts) {
    size_t i = 0;
    for (; i + KILN_AHEAD < n; i++) {
        __builtin_prefetch(&counts[entries[i + KILN_AHEAD] >> 32], 1);
        counts[entries[i] >> 32]++;
    }
    for (; i < n; i++) counts[entries[i] >> 32]++;
}

void kiln_postings_scatter(const uint64_t *entries, size_t n, uint32_t *counts, uint32_t *out) {
    size_t i = 0;
    for (; i + KILN_AHEAD < n; i++) {
        __builtin_prefetch(&counts[entries[i + KILN_AHEAD] >> 32], 1);
        /* The counter for the entry half as far ahead is in the cache by now: its slot next. */
        __builtin_prefetch(&out[counts[entries[i + KILN_AHEAD / 2] >> 32]], 1);
        uint32_t at = counts[entries[i] >> 32]++;
        out[at] = (uint32_t)entries[i];
    }
    for (; i < n; i++) {
        uint32_t at = counts[entries[i] >> 32]++;
        out[at] = (uint32_t)entries[i];
    }
}

int kiln_malloc_trim(void) { return malloc_trim(0); }

int kiln_open_beneath(int dirfd, const char *path, int flags) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    if (flags & O_CREAT) how.mode = 0644;  /* openat2 refuses O_CREAT without a mode; umask applies */
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    long fd;
    do { fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how); } while (fd < 0 && errno == EINTR);
    return (int)fd;
}
