/* Terminal throughput, measured from C so that the client is never the limit (pty.sh).
 *
 *   pty_throughput baseline FILE              forkpty + bash, `cat FILE`, read the master
 *   pty_throughput kiln PORT PATH KEY FILE    the same through Kiln: a terminal's WebSocket stream
 *                                             (PATH like /api/pty/pty_…/stream), API key KEY
 *
 * Both put the terminal in raw mode, `cat` the file and wait for a marker printed after it; they
 * print "<MB/s> <bytes> <seconds> <reads>". The WebSocket client is minimal: it sends one masked
 * binary frame and reads frames (binary payload counted, text frames skipped).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void die(const char *m) { perror(m); exit(1); }

/* The real newline before the marker tells the output from the echo of the command line. */
static const char MARKER[] = "\n__DONE__";

/* Keeps the last bytes seen, so a marker split across reads is still found. */
struct tail { char b[64]; size_t n; };
static int tail_add(struct tail *t, const char *p, size_t n) {
    size_t k = n < 32 ? n : 32;
    if (t->n + k > sizeof t->b) { memmove(t->b, t->b + t->n - 16, 16); t->n = 16; }
    memcpy(t->b + t->n, p + n - k, k);
    t->n += k;
    return memmem(t->b, t->n, MARKER, sizeof MARKER - 1) != NULL;
}

static void command(char *out, size_t cap, const char *file) {
    snprintf(out, cap, "stty raw -echo; cat %s; printf '\\n__DONE__'\n", file);
}

static int baseline(const char *file) {
    int fd;
    pid_t pid = forkpty(&fd, NULL, NULL, NULL);
    if (pid < 0) die("forkpty");
    if (pid == 0) { execl("/bin/bash", "bash", "--norc", "-i", (char *)NULL); _exit(127); }
    static char buf[1 << 20];
    struct pollfd p = { fd, POLLIN, 0 };
    while (poll(&p, 1, 300) > 0) if (read(fd, buf, sizeof buf) <= 0) break;   /* the prompt */
    char cmd[4096];
    command(cmd, sizeof cmd, file);
    double t0 = now();
    if (write(fd, cmd, strlen(cmd)) < 0) die("write");
    long got = 0, reads = 0;
    struct tail t = { .n = 0 };
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        got += n; reads++;
        if (tail_add(&t, buf, (size_t)n)) break;
    }
    double el = now() - t0;
    printf("%.1f %ld %.3f %ld\n", got / el / 1e6, got, el, reads);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 0;
}

static void send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) { ssize_t w = write(fd, c, n); if (w <= 0) die("send"); c += w; n -= (size_t)w; }
}

static size_t read_full(int fd, char *p, size_t n) {
    size_t got = 0;
    while (got < n) { ssize_t r = read(fd, p + got, n - got); if (r <= 0) return got; got += (size_t)r; }
    return got;
}

static int kiln(int port, const char *path, const char *key, const char *file) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
                     path, port, key);
    send_all(fd, req, (size_t)n);
    /* The response head, byte by byte so no frame byte is taken with it. */
    char head[4096]; size_t h = 0;
    while (h < sizeof head - 1) {
        if (read(fd, head + h, 1) != 1) die("handshake");
        h++;
        if (h >= 4 && memcmp(head + h - 4, "\r\n\r\n", 4) == 0) break;
    }
    head[h] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "handshake refused: %s\n", head); return 1; }

    static char buf[1 << 20];
    /* Skip the replay and the prompt: read until the stream is quiet for 300 ms. */
    struct pollfd p = { fd, POLLIN, 0 };
    while (poll(&p, 1, 300) > 0) if (read(fd, buf, sizeof buf) <= 0) die("read");

    char cmd[4096];
    command(cmd, sizeof cmd, file);
    size_t len = strlen(cmd);
    unsigned char frame[4200];
    size_t fl = 0;
    frame[fl++] = 0x82;   /* FIN, binary */
    if (len < 126) frame[fl++] = 0x80 | (unsigned char)len;
    else { frame[fl++] = 0x80 | 126; frame[fl++] = (unsigned char)(len >> 8); frame[fl++] = (unsigned char)len; }
    unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    memcpy(frame + fl, mask, 4); fl += 4;
    for (size_t i = 0; i < len; i++) frame[fl++] = (unsigned char)cmd[i] ^ mask[i % 4];

    double t0 = now();
    send_all(fd, frame, fl);
    long got = 0, frames = 0;
    struct tail t = { .n = 0 };
    for (;;) {
        unsigned char hd[10];
        if (read_full(fd, (char *)hd, 2) != 2) break;
        uint64_t plen = hd[1] & 0x7f;
        if (plen == 126) { if (read_full(fd, (char *)hd + 2, 2) != 2) break; plen = ((uint64_t)hd[2] << 8) | hd[3]; }
        else if (plen == 127) {
            if (read_full(fd, (char *)hd + 2, 8) != 8) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = plen << 8 | hd[2 + i];
        }
        int opcode = hd[0] & 0x0f, done = 0;
        while (plen > 0) {
            size_t want = plen < sizeof buf ? (size_t)plen : sizeof buf;
            ssize_t r = read(fd, buf, want);
            if (r <= 0) { done = 1; break; }
            plen -= (uint64_t)r;
            if (opcode == 2 || opcode == 0) { got += r; if (tail_add(&t, buf, (size_t)r)) done = 2; }
        }
        frames++;
        if (opcode == 8 || done) break;
    }
    double el = now() - t0;
    printf("%.1f %ld %.3f %ld\n", got / el / 1e6, got, el, frames);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "baseline") == 0) return baseline(argv[2]);
    if (argc == 6 && strcmp(argv[1], "kiln") == 0) return kiln(atoi(argv[2]), argv[3], argv[4], argv[5]);
    fprintf(stderr, "usage: pty_throughput baseline FILE | pty_throughput kiln PORT PATH KEY FILE\n");
    return 2;
}
