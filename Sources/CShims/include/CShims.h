#ifndef KILN_CSHIMS_H
#define KILN_CSHIMS_H
/* What Glibc does not expose to Swift (epoll, eventfd, accept4), and process spawning that must
 * not run Swift code between fork and exec. */
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* epoll */
int kiln_epoll_create(void);
int kiln_epoll_add(int epfd, int fd, uint32_t events, uint64_t data);
int kiln_epoll_mod(int epfd, int fd, uint32_t events, uint64_t data);
int kiln_epoll_del(int epfd, int fd);
/* Waits; fills parallel arrays of events and data; returns count or -1 (errno). */
int kiln_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int max, int timeout_ms);

extern const uint32_t KILN_EPOLLIN;
extern const uint32_t KILN_EPOLLOUT;
extern const uint32_t KILN_EPOLLERR;
extern const uint32_t KILN_EPOLLHUP;
extern const uint32_t KILN_EPOLLRDHUP;
extern const uint32_t KILN_EPOLLET;
extern const uint32_t KILN_EPOLLEXCLUSIVE;

/* eventfd */
int kiln_eventfd(void);
int kiln_eventfd_signal(int fd);
int kiln_eventfd_drain(int fd);

/* sockets */
int kiln_accept(int fd, char *addr, size_t addrlen);
int kiln_set_nodelay(int fd);
int kiln_set_reuse(int fd);
int kiln_set_v6only(int fd, int on);
/* Binds and listens on host:port (numeric or name). Returns fd or -errno; writes the bound port. */
int kiln_listen(const char *host, int port, int backlog, int *bound_port);
ssize_t kiln_send(int fd, const void *buf, size_t len);
ssize_t kiln_writev2(int fd, const void *a, size_t alen, const void *b, size_t blen);
/* Raises RLIMIT_NOFILE to its hard maximum; returns the new soft limit. */
long kiln_raise_nofile(void);
/* Ignores SIGPIPE for the process. */
void kiln_ignore_sigpipe(void);
/* Current RSS in bytes, from /proc/self/statm. */
long kiln_rss_bytes(void);
/* Monotonic nanoseconds. */
uint64_t kiln_monotonic_ns(void);
int kiln_errno(void);

/* fork+exec of a child in its own process group, with optional cwd and pipes for stdout/stderr.
 * argv/envp NULL-terminated. Returns pid or -errno. */
int kiln_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
               int stdin_fd, int stdout_fd, int stderr_fd, int new_pgroup);
/* kiln_spawn, and the child also gets extra[i] as fd 3 + i (a pipe a program is told to use, such as
 * Chromium's --remote-debugging-pipe on 3 and 4). */
int kiln_spawn_fds(const char *path, char *const argv[], char *const envp[], const char *cwd,
                   int stdin_fd, int stdout_fd, int stderr_fd, int new_pgroup, const int *extra, int nextra);
/* forkpty + chdir + execve in C. Returns pid or -errno; writes the master fd. */
int kiln_forkpty(int *master_fd, const char *path, char *const argv[], char *const envp[],
                 const char *cwd, unsigned short cols, unsigned short rows);
int kiln_set_winsize(int fd, unsigned short cols, unsigned short rows);
/* pipe2 with O_CLOEXEC (Glibc hides pipe2 from Swift). */
int kiln_pipe_cloexec(int fds[2]);
/* memmem and memrchr (GNU extensions) for byte search over file content. */
const void *kiln_memmem(const void *hay, size_t hay_len, const void *needle, size_t needle_len);
const void *kiln_memrchr(const void *s, int c, size_t n);

/* Returns the free memory at the top of every malloc heap (one per thread that allocated) to the
 * system: after a rescan's threads are done, their heaps would otherwise stay resident. */
int kiln_malloc_trim(void);

/* Opens `path` relative to the directory `dirfd` with openat2: never above it and through no symlink
 * at all (any component, the last included), so a folder swapped for a link after a walk saw it
 * cannot lead out. -1 with errno: ELOOP or EXDEV for a link on the way, ENOSYS or EPERM where the
 * kernel (before 5.6) or a seccomp filter has no openat2. */
int kiln_open_beneath(int dirfd, const char *path, int flags);

/* The trigram index's counting sort of (key << 32 | doc) entries: counts[key] += 1 per entry, then
 * each doc written at out[counts[key]++] (counts holding each key's start by then). In C for the
 * prefetch of the counter and slot a few entries ahead: both are random over megabytes. */
/* Appends (key << 32 | doc) to out[count...] for each trigram key of p[0..<n] (n >= 3) whose bit in
 * `seen` (2^21 bits) is not set yet, setting it; keys are three 7-bit `fold`ed bytes. out must have
 * room for one entry more than it receives. Returns the new count. */
size_t kiln_trigram_entries(const uint8_t *p, size_t n, const uint8_t *fold, uint64_t *seen,
                            uint64_t *out, size_t count, uint32_t doc);
void kiln_postings_count(const uint64_t *entries, size_t n, uint32_t *counts);
void kiln_postings_scatter(const uint64_t *entries, size_t n, uint32_t *counts, uint32_t *out);

#endif
