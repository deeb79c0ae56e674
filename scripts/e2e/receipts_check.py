"""Verifies Kiln's receipts independently: hashlib + the `cryptography` package, nothing from Kiln.

Usage: receipts_check.py BASE_URL API_KEY WS_ID [--expect-break SEQ]
For every receipt of the workspace's chain (in seq order): the hash is the hex SHA-256 of the RFC 8785
canonical JSON of the receipt without `hash` and `signature`; `prev_hash` is the previous receipt's
hash (64 zeros for the first); `signature` is base64url (no padding) Ed25519 over the same bytes,
checked with GET /api/receipts/public-key. Exits 0 when all hold (or, with --expect-break, when the
first failure is at SEQ), 1 otherwise.
"""
import base64, hashlib, json, sys, urllib.request
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

BASE, KEY, WS = sys.argv[1], sys.argv[2], sys.argv[3]
EXPECT = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--expect-break" else None


def get(path):
    req = urllib.request.Request(BASE + path, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jcs(v):
    """RFC 8785 for the value types receipts use (no floats)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            o = ord(ch)
            if ch == '"': out.append('\\"')
            elif ch == "\\": out.append("\\\\")
            elif ch == "\b": out.append("\\b")
            elif ch == "\f": out.append("\\f")
            elif ch == "\n": out.append("\\n")
            elif ch == "\r": out.append("\\r")
            elif ch == "\t": out.append("\\t")
            elif o < 0x20: out.append("\\u%04x" % o)
            else: out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(jcs(k) + ":" + jcs(v[k]) for k in keys) + "}"
    raise ValueError(f"unexpected value {v!r}")


key = Ed25519PublicKey.from_public_bytes(b64url(get("/api/receipts/public-key")["public_key"]))
receipts, cursor = [], ""
while True:
    page = get(f"/api/receipts?ws_id={WS}&limit=200" + (f"&cursor={cursor}" if cursor else ""))
    receipts += page["items"]
    cursor = page.get("next_cursor")
    if not cursor:
        break

prev, first_break = "0" * 64, None
for i, r in enumerate(receipts, start=1):
    body = {k: v for k, v in r.items() if k not in ("hash", "signature")}
    data = jcs(body).encode()
    digest = hashlib.sha256(data).hexdigest()
    problems = []
    if r["seq"] != i: problems.append(f"seq {r['seq']} where {i} was expected")
    if digest != r["hash"]: problems.append("hash mismatch")
    if r["prev_hash"] != prev: problems.append("prev_hash does not link")
    try:
        key.verify(b64url(r["signature"]), data)
    except InvalidSignature:
        problems.append("bad signature")
    if problems and first_break is None:
        first_break = (i, problems)
    prev = r["hash"]

print(f"receipts: {len(receipts)} checked; " + ("all hold" if first_break is None else f"first break at seq {first_break[0]}: {', '.join(first_break[1])}"))
if EXPECT is None:
    sys.exit(0 if first_break is None and receipts else 1)
sys.exit(0 if first_break is not None and first_break[0] == EXPECT else 1)
