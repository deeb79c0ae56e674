/* SSE fan-out client (see sse.sh): N followers of one agent run over plain epoll, so the client's own
 * cost per delivery is a few microseconds and the figures measure the server, not the client.
 *   sse_fanout PORT SERVER_PID N TICKS RUN_ID KEY [KEY ...]
 * Each follower sends GET /api/agent/follow?run_id=RUN_ID with one of the keys (round robin) and
 * reads the stream; every text delta carries "t=<unix time>" from the provider. A delivery counts as
 * live when it was sent after every follower had its 200. Prints p50/p99/max of live delivery
 * latency, how many followers got every delta, and the server's peak RSS (VmHWM is per process
 * lifetime, so VmRSS is sampled every 50 ms). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { BUF = 1 << 16 };

typedef struct {
    int fd;
    int state; /* 0 connecting, 1 waiting for status, 2 streaming, 3 done */
    int got;
    size_t len;
    char buf[BUF];
} Conn;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double rss_mib(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    double v = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) { v = atof(line + 6) / 1024.0; break; }
    fclose(f);
    return v;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: %s PORT SERVER_PID N TICKS RUN_ID KEY [KEY ...]\n", argv[0]); return 2; }
    int port = atoi(argv[1]), pid = atoi(argv[2]), n = atoi(argv[3]), ticks = atoi(argv[4]);
    const char *run = argv[5];
    char **keys = argv + 6;
    int nkeys = argc - 6;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    Conn *conns = calloc(n, sizeof(Conn));
    double *lat = malloc(sizeof(double) * (size_t)n * (ticks + 1));
    size_t nlat = 0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    double base_rss = rss_mib(pid), peak = base_rss, all_connected = 0, last_sample = 0;
    int connected = 0, finished = 0, opened = 0;
    const char *marker = "\"text\":\"t=";
    size_t mlen = strlen(marker);
    double deadline = now() + 300;

    while (finished < n && now() < deadline) {
        /* Open connections in batches, so the accept queue keeps up. */
        for (int k = 0; k < 200 && opened < n; k++, opened++) {
            Conn *c = &conns[opened];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) { c->state = 3; finished++; close(c->fd); continue; }
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (unsigned)opened};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        }
        struct epoll_event evs[512];
        int m = epoll_wait(ep, evs, 512, 20);
        double t = now();
        for (int e = 0; e < m; e++) {
            Conn *c = &conns[evs[e].data.u32];
            if (c->state == 0 && (evs[e].events & EPOLLOUT)) {
                int err = 0; socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) { c->state = 3; finished++; close(c->fd); continue; }
                char req[512];
                int len = snprintf(req, sizeof req, "GET /api/agent/follow?run_id=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n",
                                   run, keys[evs[e].data.u32 % nkeys]);
                if (write(c->fd, req, len) != len) { c->state = 3; finished++; close(c->fd); continue; }
                c->state = 1;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[e].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            if (!(evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->state == 3) continue;
            ssize_t r = read(c->fd, c->buf + c->len, BUF - 1 - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                c->state = 3; finished++; close(c->fd); continue;
            }
            c->len += (size_t)r;
            c->buf[c->len] = 0;
            if (c->state == 1) {
                char *end = strstr(c->buf, "\r\n\r\n");
                if (!end) continue;
                if (!strstr(c->buf, " 200 ") || strstr(c->buf, " 200 ") > end) { c->state = 3; finished++; close(c->fd); continue; }
                c->state = 2;
                if (++connected == n) all_connected = t;
                size_t head = (size_t)(end + 4 - c->buf);
                memmove(c->buf, c->buf + head, c->len - head);
                c->len -= head;
                c->buf[c->len] = 0;
            }
            /* Whole events only: everything up to the last blank line; the tail waits for more. */
            char *cut = NULL;
            for (char *p = c->buf; (p = strstr(p, "\n\n")); p += 2) cut = p;
            if (!cut) { if (c->len >= BUF - 1) c->len = 0; continue; }
            *cut = 0;
            for (char *p = c->buf; (p = strstr(p, marker)); p += mlen) {
                double sent = atof(p + mlen);
                if (all_connected > 0 && sent >= all_connected) lat[nlat++] = (t - sent) * 1000.0;
                c->got++;
            }
            int over = strstr(c->buf, "event: run.completed") || strstr(c->buf, "event: run.failed") || strstr(c->buf, "event: run.cancelled");
            size_t rest = c->len - (size_t)(cut + 2 - c->buf);
            memmove(c->buf, cut + 2, rest);
            c->len = rest;
            c->buf[c->len] = 0;
            if (over) { c->state = 3; finished++; close(c->fd); }
        }
        if (t - last_sample > 0.05) { double v = rss_mib(pid); if (v > peak) peak = v; last_sample = t; }
    }
    int complete = 0;
    for (int i = 0; i < n; i++) if (conns[i].got == ticks) complete++;
    qsort(lat, nlat, sizeof(double), cmp);
#define PCT(q) (nlat ? lat[(size_t)((q) * (double)(nlat - 1))] : 0.0)
    printf("subscribers: %d requested, %d connected, %d received all %d deltas\n", n, connected, complete, ticks);
    printf("live delivery latency over %zu deliveries: p50 %.1f ms  p99 %.1f ms  max %.1f ms\n", nlat, PCT(0.50), PCT(0.99), nlat ? lat[nlat - 1] : 0.0);
    printf("server RSS: %.1f MiB before, %.1f MiB peak\n", base_rss, peak);
    printf("goals: p99 < 100 ms %s; RSS < 250 MiB %s\n", nlat && PCT(0.99) < 100 ? "met" : "NOT met", peak < 250 ? "met" : "NOT met");
    if (all_connected == 0) printf("note: not every follower connected, so no delivery counted as live\n");
    return 0;
}
