"""Collab with two real users in two `requests` sessions against `kiln serve`.

A (the owner) invites B by mail (the link read from the outbox); B, who has no account, registers
through it and is a member. A runs an agent (scripted model) and asks B for a review; B's
notification stream (SSE) carries it within a second; B reads the run's diff and receipt in the
review, comments with @owner, approves; A is told of both. The workspace's activity lists each step
in order, and its SSE stream resumes after a disconnect with no gap and no duplicate. Then share
links of the run (no cookies; JSON; password; revoke), permissions (a viewer may not invite or share;
another workspace's member sees nothing) and the invitation's single use.

Usage: collab.py BASE DATA_DIR PROJECT_PATH OWNER_EMAIL PASSWORD
Prints one "ok"/"FAIL" line per check and "collab e2e: P passed, F failed".
"""

import glob
import json
import queue
import re
import sys
import threading
import time

import requests

BASE, DATA, PROJECT, OWNER, PW = sys.argv[1:6]
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok  ", name)
    else:
        failed += 1
        print("FAIL", name, detail)


def login(email):
    s = requests.Session()
    r = s.post(BASE + "/auth/login", json={"email": email, "password": PW})
    r.raise_for_status()
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s


class SSE:
    """Reads an event stream on a thread: (arrival time, id, event, data) tuples in a queue."""

    def __init__(self, session, path, last_id=None):
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        self.resp = session.get(BASE + path, headers=headers, stream=True, timeout=60)
        self.events = queue.Queue()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        ev = {}
        try:
            for raw in self.resp.iter_lines(decode_unicode=True):
                if raw is None:
                    continue
                if raw == "":
                    if "data" in ev:
                        self.events.put((time.monotonic(), ev.get("id"), ev.get("event"), json.loads(ev["data"])))
                    ev = {}
                elif raw.startswith(":"):
                    continue
                else:
                    k, _, v = raw.partition(":")
                    ev[k] = v[1:] if v.startswith(" ") else v
        except Exception:
            pass

    def next(self, timeout=10, where=lambda e: True):
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if where(e):
                return e

    def close(self):
        self.resp.close()


def drain(stream, want):
    """The stream's events: up to 30 s for the `want` expected (a loaded machine may lag), then 0.5 s of
    quiet, so an extra or duplicate event after them is caught too."""
    got = []
    while True:
        e = stream.next(30 if len(got) < want else 0.5)
        if e is None:
            return got
        got.append(e)


def outbox_link(to, pattern):
    for _ in range(300):
        for path in sorted(glob.glob(DATA + "/outbox/*.eml")):
            text = open(path).read()
            if ("To: " + to) in text:
                m = re.search(pattern, text)
                if m:
                    return m.group(0)
        time.sleep(0.1)
    return None


def wait_run(s, run_id):
    for _ in range(600):
        r = s.get(BASE + "/api/agent/runs/" + run_id).json()
        if r.get("status") in ("completed", "failed", "cancelled"):
            return r
        time.sleep(0.1)
    return {}


a = login(OWNER)
ws = a.get(BASE + "/api/workspaces").json()["items"][0]["id"]
me_a = a.get(BASE + "/api/auth/session").json()["user"]["id"]
prj = a.post(BASE + "/api/project/load", json={"ws_id": ws, "path": PROJECT}).json()["id"]
activity_live = SSE(a, "/api/collab/activity/stream?ws_id=" + ws)

# 1. Invitation by mail; B registers through it.
r = a.post(BASE + "/api/collab/invite", json={"ws_id": ws, "email": "bea@example.com", "role": "member"})
check("A invites bea@example.com (201, pending)", r.status_code == 201 and r.json().get("state") == "pending", r.text)
check("the invitation answer carries no token", "kwi_" not in r.text)
link = outbox_link("bea@example.com", r"https?://\S+/invite/kwi_[A-Za-z0-9]+")
check("the invitation mail in the outbox carries the link", link is not None)
token = link.rsplit("/", 1)[1] if link else "kwi_missing"
anon = requests.Session()
r = anon.post(BASE + "/api/collab/invitations/" + token + "/accept", json={"name": "Bea", "password": PW})
check("B, with no account, registers through the invitation (201)", r.status_code == 201, r.text)
r2 = anon.post(BASE + "/api/collab/invitations/" + token + "/accept", json={"name": "Eve", "password": PW})
check("the invitation is single-use (410 the second time)", r2.status_code == 410, r2.text)
b = login("bea@example.com")
me_b = b.get(BASE + "/api/auth/session").json()["user"]["id"]
members = a.get(BASE + "/api/workspaces/%s/members" % ws).json()["items"]
check("B is a member", any(m["user_id"] == me_b and m["role"] == "member" for m in members), members)
inv = a.get(BASE + "/api/collab/invitations?ws_id=" + ws).json()["items"]
check("the invitation reads accepted", inv and inv[0]["state"] == "accepted" and inv[0]["accepted_by"] == me_b, inv)

# 2. A's run; a review from B, told live.
notes_b = SSE(b, "/api/collab/notifications/stream")
notes_a = SSE(a, "/api/collab/notifications/stream")
time.sleep(0.3)
run = a.post(BASE + "/api/agent/run", headers={"Accept": "application/json"},
             json={"project_id": prj, "prompt": "bump the answer"}).json()["run_id"]
done = wait_run(a, run)
check("A's agent run completed", done.get("status") == "completed", done)
ended = notes_a.next(10, lambda e: e[3].get("kind") == "run_ended")
check("A is told the run ended (run_ended on A's stream)", ended is not None and ended[3]["subject"]["id"] == run)
t0 = time.monotonic()
r = a.post(BASE + "/api/collab/request-review",
           json={"ws_id": ws, "subject": {"type": "run", "id": run}, "reviewers": [me_b], "note": "please look"})
check("A requests B's review (201, open)", r.status_code == 201 and r.json().get("state") == "open", r.text)
review = r.json().get("id", "rev_missing")
got = notes_b.next(5, lambda e: e[3].get("kind") == "review_requested")
check("B's notification stream carries the review request", got is not None and got[3]["subject"]["id"] == review)
if got:
    delay = got[0] - t0
    print("     review request reached B's stream %.0f ms after the request was sent" % (delay * 1000))
    check("... within 1 s", delay < 1.0, "%.3f s" % delay)
    check("... with B's unread count", got[3].get("unread_count", 0) >= 1, got[3])
listed = b.get(BASE + "/api/collab/notifications?unread=1").json()
check("B's notifications list it, unread_count ≥ 1", listed["unread_count"] >= 1
      and any(n["kind"] == "review_requested" for n in listed["items"]), listed)
rv = b.get(BASE + "/api/collab/reviews/" + review).json()
diffs = (rv.get("run") or {}).get("diffs") or []
check("B sees the run's diff in the review", any("42" in d.get("diff", "") for d in diffs), rv)
check("... and its signed receipt", isinstance(rv.get("receipt"), dict) and "signature" in json.dumps(rv["receipt"]))

# 3. B comments with @owner and approves; A is told of both.
r = b.post(BASE + "/api/collab/reviews/%s/comments" % review, json={"body": "@owner looks right to me", "path": "src/app.txt", "line": 1})
check("B comments with @owner (201, A mentioned)", r.status_code == 201 and r.json().get("mentions") == [me_a], r.text)
m = notes_a.next(5, lambda e: e[3].get("kind") == "mention")
check("A is told of the mention, live", m is not None and m[3]["subject"]["id"] == review)
r = b.post(BASE + "/api/collab/reviews/%s/verdict" % review, json={"verdict": "approve"})
check("B approves (state approved)", r.status_code == 200 and r.json().get("state") == "approved", r.text)
v = notes_a.next(5, lambda e: e[3].get("kind") == "review_verdict")
check("A is told of the verdict, live", v is not None and "approved" in v[3]["title"])
na = a.get(BASE + "/api/collab/notifications").json()
kinds = [n["kind"] for n in na["items"]]
check("A's notifications: run_ended, mention, review_verdict", {"run_ended", "mention", "review_verdict"} <= set(kinds), kinds)
nid = na["items"][0]["id"]
r = a.post(BASE + "/api/collab/notifications/%s/read" % nid)
check("A marks one read (unread_count drops)", r.status_code == 200 and r.json()["unread_count"] == na["unread_count"] - 1, r.text)
check("B cannot mark A's notification (404)", b.post(BASE + "/api/collab/notifications/%s/read" % nid).status_code == 404)
r = a.post(BASE + "/api/collab/notifications/read-all")
check("read-all leaves none unread", r.status_code == 200 and r.json()["unread_count"] == 0, r.text)

# 4. The feed, in order; its live stream matches the list.
time.sleep(0.5)
feed = a.get(BASE + "/api/collab/activity?ws_id=%s&limit=200" % ws).json()["items"]
order = [i["kind"] for i in reversed(feed)]
want = ["invitation.created", "member.joined", "run.started", "file.changed", "run.completed",
        "review.requested", "review.commented", "review.verdict"]
pos, ok = 0, True
for k in want:
    if k in order[pos:]:
        pos = order.index(k, pos) + 1
    else:
        ok = False
check("the activity feed shows each step in order", ok, order)
check("feed items are typed {id, kind, actor, subject{type,id,title}, summary, created_at}",
      all({"id", "kind", "actor", "subject", "summary", "created_at"} <= set(i) and
          {"type", "id", "title"} <= set(i["subject"]) for i in feed))
run_done = next((i for i in feed if i["kind"] == "run.completed"), {})
check("run.completed carries its cost", "cost_usd" in run_done and run_done.get("actor") == me_a, run_done)
check("?kind=review narrows to the review items", all(i["kind"].startswith("review.") for i in
      a.get(BASE + "/api/collab/activity?ws_id=%s&kind=review" % ws).json()["items"]))
check("?actor=B lists only B's", {i["actor"] for i in a.get(BASE + "/api/collab/activity?ws_id=%s&actor=%s" % (ws, me_b)).json()["items"]} == {me_b})
live = drain(activity_live, len(feed))
check("the live stream carried the same items as the list, in order",
      [int(e[1]) for e in live] == sorted(i["id"] for i in feed), ([e[1] for e in live], [i["id"] for i in feed]))
activity_live.close()
last = int(live[-1][1]) if live else 0
# Disconnected: more happens; the stream resumes from the last id it gave.
r = b.post(BASE + "/api/collab/reviews/%s/comments" % review, json={"body": "one more thing"})
link = a.post(BASE + "/api/collab/share-link", json={"ws_id": ws, "subject": {"type": "run", "id": run}}).json()
a.delete(BASE + "/api/collab/share-links/" + link["id"])
time.sleep(0.5)
resumed = SSE(a, "/api/collab/activity/stream?ws_id=" + ws, last_id=last)
got = drain(resumed, 3)
resumed.close()
ids = [int(e[1]) for e in got]
check("the stream resumes after Last-Event-ID with no gap or duplicate",
      ids == list(range(last + 1, last + 1 + len(ids))) and [e[2] for e in got] ==
      ["review.commented", "share_link.created", "share_link.revoked"], [(e[1], e[2]) for e in got])

# 5. Share links of the run.
run2 = a.post(BASE + "/api/agent/run", headers={"Accept": "application/json"},
              json={"project_id": prj, "prompt": "another run"}).json()["run_id"]
wait_run(a, run2)
made = a.post(BASE + "/api/collab/share-link", json={"ws_id": ws, "subject": {"type": "run", "id": run}, "password": "open sesame"}).json()
nobody = requests.Session()
check("a protected link without its password is 401", nobody.get(BASE + made["path"]).status_code == 401)
check("a wrong password is 401", nobody.get(BASE + made["path"], params={"password": "nope"}).status_code == 401)
page = nobody.get(BASE + made["path"], params={"password": "open sesame"})
check("the link opens without cookies: transcript and diff", page.status_code == 200 and "bump the answer" in page.text and "answer = 42" in page.text)
js = nobody.get(BASE + made["path"] + ".json", headers={"X-Share-Password": "open sesame"}).json()
check("the JSON form shows the same run", js["subject"]["id"] == run and js["run"]["prompt"] == "bump the answer")
leaks = [x for x in (ws, prj, run2, me_a, me_b, review) if x in page.text or x in json.dumps(js)]
check("nothing else of the workspace: no workspace, project, other run, user or review id", not leaks, leaks)
a.delete(BASE + "/api/collab/share-links/" + made["id"])
check("revoked: 404 at once", nobody.get(BASE + made["path"], params={"password": "open sesame"}).status_code == 404)
opened = notes_a.next(5, lambda e: e[3].get("kind") == "share_link_opened")
check("A is told the link was opened the first time", opened is not None)

# 6. Permissions.
r = a.post(BASE + "/api/collab/invite", json={"ws_id": ws, "email": "vic@example.com", "role": "viewer"})
vlink = outbox_link("vic@example.com", r"https?://\S+/invite/kwi_[A-Za-z0-9]+")
anon.post(BASE + "/api/collab/invitations/" + vlink.rsplit("/", 1)[1] + "/accept", json={"name": "Vic", "password": PW})
v = login("vic@example.com")
check("a viewer reads the activity", v.get(BASE + "/api/collab/activity?ws_id=" + ws).status_code == 200)
check("a viewer cannot invite (403)", v.post(BASE + "/api/collab/invite", json={"ws_id": ws, "email": "x@example.com", "role": "viewer"}).status_code == 403)
check("a viewer cannot share (403)", v.post(BASE + "/api/collab/share-link", json={"ws_id": ws, "subject": {"type": "run", "id": run}}).status_code == 403)
check("a member cannot invite either (members:write is admin's, 403)", b.post(BASE + "/api/collab/invite", json={"ws_id": ws, "email": "x@example.com", "role": "viewer"}).status_code == 403)
own_b = [w["id"] for w in b.get(BASE + "/api/workspaces").json()["items"] if w["id"] != ws][0]
check("A sees nothing of B's own workspace: activity 404/403",
      a.get(BASE + "/api/collab/activity?ws_id=" + own_b).status_code in (403, 404))
check("... nor its reviews", a.get(BASE + "/api/collab/reviews?ws_id=" + own_b).status_code in (403, 404))
check("... nor a review of A's workspace through B's", b.get(BASE + "/api/collab/reviews/%s?ws_id=%s" % (review, own_b)).status_code == 404)
check("B's notifications hold none of A's", all(n["kind"] not in ("mention", "run_ended") for n in b.get(BASE + "/api/collab/notifications").json()["items"]))
check("an unknown invitation token is 404", anon.post(BASE + "/api/collab/invitations/kwi_" + "x" * 43 + "/accept", json={"name": "N", "password": PW}).status_code == 404)

for s in (notes_a, notes_b):
    s.close()
print("collab e2e: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
