"""Runs the Autobahn WebSocket conformance cases (kosoku runner) against a URL and judges them.

Sections 1-7 and 9 (permessage-deflate, sections 12-13, is out of scope). A case passes when its
behaviour is OK, NON-STRICT or INFORMATIONAL (Autobahn's own notion of a pass) and its close
behaviour is OK or INFORMATIONAL.
Usage: python autobahn.py ws://127.0.0.1:PORT/ws/echo OUTDIR
"""
import collections
import json
import subprocess
import sys

url, outdir = sys.argv[1], sys.argv[2]
sections = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*"]
cmd = ["kosoku"]
args = []
for s in sections:
    args += ["-i", s]
proc = subprocess.run(cmd + args + ["-p", "2", "-o", outdir, url], capture_output=True, text=True)
print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:])
index = json.load(open(f"{outdir}/index.json"))
counts = collections.Counter()
failures = []
for agent, cases in index.items():
    for case, r in cases.items():
        counts[r["behavior"]] += 1
        ok = r["behavior"] in ("OK", "NON-STRICT", "INFORMATIONAL") and r["behaviorClose"] in ("OK", "INFORMATIONAL")
        if not ok:
            failures.append(f"{case}: {r['behavior']} / close {r['behaviorClose']}")
total = sum(counts.values())
print("autobahn behaviours:", dict(counts))
for f in sorted(failures):
    print("FAIL", f)
print(f"autobahn: {total - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures or total < 290 else 0)
