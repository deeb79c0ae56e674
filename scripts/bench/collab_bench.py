"""Collab notification fan-out: SUBSCRIBERS notification streams and RATE activity events a second.

USERS accounts are made and added to the workspace; each opens SUBSCRIBERS/USERS notification
streams (GET /api/collab/notifications/stream, its session cookie: a person with several tabs and
devices). The owner then comments on a review at RATE comments a second for SECONDS, each comment
mentioning the next user in turn: every comment is an activity event (review.commented, on the
workspace's feed) and a notification for the mentioned user, pushed to each of their streams.
Delivery latency is the time from sending the comment to its notification arriving on a stream
(matched by comment id); the server's RSS is sampled throughout.

Usage: collab_bench.py BASE KILN_PID OWNER_EMAIL PASSWORD PROJECT_PATH USERS SUBSCRIBERS RATE SECONDS
"""

import asyncio
import json
import sys
import time
import urllib.parse

import requests

BASE, PID, OWNER, PW, PROJECT = sys.argv[1:6]
USERS, SUBS, RATE, SECONDS = (int(x) for x in sys.argv[6:10])
HOST, PORT = urllib.parse.urlsplit(BASE).hostname, urllib.parse.urlsplit(BASE).port


def rss_mib():
    for line in open("/proc/%s/status" % PID):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def session(email, ip):
    """A signed-in requests session; ip goes in X-Forwarded-For (Kiln trusts 127.0.0.1 as a proxy here)
    so each account's sign-in counts against its own address's limit, as from separate machines."""
    s = requests.Session()
    s.headers["X-Forwarded-For"] = ip
    r = s.post(BASE + "/auth/login", json={"email": email, "password": PW})
    r.raise_for_status()
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s


t_setup = time.monotonic()
owner = session(OWNER, "10.255.0.1")
ws = owner.get(BASE + "/api/workspaces").json()["items"][0]["id"]
cookies = []
for i in range(USERS):
    email = "user%d@example.com" % i
    made = owner.post(BASE + "/api/admin/users", json={"email": email, "name": "User %d" % i})
    made.raise_for_status()
    token = made.json()["setup_url"].split("token=")[1]
    requests.post(BASE + "/auth/setup", json={"token": token, "email": email, "password": PW},
                  headers={"X-Forwarded-For": "10.1.%d.%d" % (i // 250, i % 250)}).raise_for_status()
    owner.post(BASE + "/api/workspaces/%s/members" % ws, json={"email": email, "role": "member"}).raise_for_status()
    s = session(email, "10.2.%d.%d" % (i // 250, i % 250))
    cookies.append("kiln_session=" + s.cookies["kiln_session"])
user_ids = {}
page = owner.get(BASE + "/api/workspaces/%s/members?limit=200" % ws).json()
for m in page["items"]:
    if m.get("email", "").startswith("user"):
        user_ids[int(m["email"][4:].split("@")[0])] = m["user_id"]
prj = owner.post(BASE + "/api/project/load", json={"ws_id": ws, "path": PROJECT}).json()["id"]
review = owner.post(BASE + "/api/collab/request-review", json={
    "ws_id": ws, "subject": {"type": "file", "id": prj, "path": "README.md"}, "reviewers": [user_ids[0]]})
if review.status_code != 201:
    raise SystemExit("request-review failed: %s" % review.text)


sent = {}        # comment id -> send time
arrivals = []    # (comment id, arrival time)
connected = 0


async def subscribe(cookie, ready):
    global connected
    r, w = await asyncio.open_connection(HOST, PORT)
    w.write(("GET /api/collab/notifications/stream HTTP/1.1\r\nHost: %s:%d\r\nCookie: %s\r\n"
             "Accept: text/event-stream\r\n\r\n" % (HOST, PORT, cookie)).encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise SystemExit("stream refused: %r" % head[:200])
    connected += 1
    if connected == SUBS:
        ready.set()
    chunked = b"chunked" in head.lower()
    buf = b""
    while True:
        if chunked:
            size_line = await r.readuntil(b"\r\n")
            n = int(size_line.strip() or b"0", 16)
            if n == 0:
                return
            data = await r.readexactly(n + 2)
            buf += data[:-2]
        else:
            data = await r.read(65536)
            if not data:
                return
            buf += data
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    now = time.monotonic()
                    d = json.loads(line[6:])
                    cid = (d.get("subject") or {}).get("comment_id")
                    if cid:
                        arrivals.append((cid, now))


async def post_loop(queue):
    r, w = await asyncio.open_connection(HOST, PORT)
    cookie = "kiln_session=" + owner.cookies["kiln_session"]
    csrf = owner.headers["X-CSRF-Token"]
    rid = review.json()["id"]
    while True:
        item = await queue.get()
        if item is None:
            w.close()
            return
        i = item
        body = json.dumps({"body": "@user%d have a look (%d)" % (i % USERS, i)}).encode()
        req = ("POST /api/collab/reviews/%s/comments HTTP/1.1\r\nHost: %s:%d\r\nCookie: %s\r\nX-CSRF-Token: %s\r\n"
               "X-Forwarded-For: 10.255.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % (rid, HOST, PORT, cookie, csrf, len(body))).encode() + body
        t = time.monotonic()
        w.write(req)
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for h in head.split(b"\r\n"):
            if h.lower().startswith(b"content-length:"):
                length = int(h.split(b":")[1])
        payload = await r.readexactly(length)
        if b" 201 " not in head.split(b"\r\n")[0]:
            print("comment refused:", head.split(b"\r\n")[0], payload[:200])
            continue
        sent[json.loads(payload)["id"]] = t


async def main():
    ready = asyncio.Event()
    per_user = SUBS // USERS
    subs = []
    for i in range(SUBS):
        subs.append(asyncio.create_task(subscribe(cookies[i % USERS], ready)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(ready.wait(), 120)
    print("setup: %d users, %d notification streams (%d per user) in %.1f s; RSS %.1f MiB"
          % (USERS, SUBS, per_user, time.monotonic() - t_setup, rss_mib()))
    queue = asyncio.Queue()
    posters = [asyncio.create_task(post_loop(queue)) for _ in range(16)]
    peak = rss_mib()
    start = time.monotonic()
    total = RATE * SECONDS
    for i in range(total):
        due = start + i / RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(i)
        if i % RATE == 0:
            peak = max(peak, rss_mib())
    for _ in posters:
        queue.put_nowait(None)
    await asyncio.gather(*posters)
    send_done = time.monotonic() - start
    await asyncio.sleep(3)
    peak = max(peak, rss_mib())
    lat = sorted((t - sent[c]) * 1000 for c, t in arrivals if c in sent)
    expected = len(sent) * per_user
    def pct(p):
        return lat[min(len(lat) - 1, int(len(lat) * p))] if lat else float("nan")
    print("load: %d comments (activity events) sent in %.1f s = %.0f/s; %d of %d deliveries arrived"
          % (len(sent), send_done, len(sent) / send_done, len(lat), expected))
    print("delivery latency ms: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f   (goal: p99 < 200)"
          % (pct(0.5), pct(0.9), pct(0.99), lat[-1] if lat else float("nan")))
    print("server RSS peak %.1f MiB (goal < 200 MiB)" % peak)
    ok = lat and pct(0.99) < 200 and peak < 200 and len(lat) == expected
    print("RESULT", "met" if ok else "missed")
    for t in subs:
        t.cancel()


asyncio.run(main())
