#!/usr/bin/env bash
# The shape every domain keeps (CONTRIBUTING.md), checked on the source tree. Fails when:
#   - a domain target depends on, or a domain file imports, another domain (one floor: what one
#     domain needs of another is a protocol in KilnCore);
#   - a static mutable registry appears (state hangs off the services the application built);
#   - SQL appears outside a domain's Store.swift and Migrations.swift (never in Routes.swift);
#   - a domain folder lacks Routes/Service/Models (and Store/Migrations when it has tables);
#   - a process is started for a user other than through KilnCore's Sandbox (the spawn and forkpty
#     shims are called only from KilnCore/Process.swift);
#   - a Swift file in Sources/ passes 600 lines, or the lines over 120 characters grow past the ratchet.
# Prints the median file length and the count of lines over 120 characters.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import json, os, re, statistics, subprocess, sys

LAYERS = {"KilnHTTP", "KilnStore", "KilnCrypto", "KilnCore", "CShims", "CSQLite", "COpenSSL"}
NOT_DOMAINS = LAYERS | {"KilnApp", "kiln", "kiln-bench"}
MAX_LINES = 600
# Lines over 120 characters may only go down: lower this when they do.
MAX_LONG_LINES = 96
# Process-wide state that is not a registry of application objects may be declared with this marker.
ALLOW = "architecture: process-wide"

problems = []
sources = sorted(d for d in os.listdir("Sources") if os.path.isdir(os.path.join("Sources", d)))
domains = [d for d in sources if d.startswith("Kiln") and d not in NOT_DOMAINS]

# 1. The package graph (as SwiftPM reads it).
pkg = json.loads(subprocess.run(["swift", "package", "dump-package"], capture_output=True, text=True, check=True).stdout)
def dep_name(d):
    for k in ("byName", "target", "product"):
        if k in d and d[k]:
            return d[k][0]
    return None
for t in pkg["targets"]:
    if t["name"] in domains:
        deps = {dep_name(d) for d in t.get("dependencies", [])}
        for other in sorted(deps & set(domains)):
            problems.append(f"Package.swift: domain {t['name']} depends on domain {other}")

# 2. Imports, registries, SQL, file lengths.
imp = re.compile(r"^\s*(?:@testable\s+)?import\s+(\w+)")
registry = [
    re.compile(r"^\s*(?:(?:public|private|fileprivate|internal)\s+)?static\s+var\s+\w+\s*(?::[^={]+)?=(?!=)"),
    re.compile(r"static\s+let\s+\w+\s*(?::[^=]+)?=\s*(?:Mutex|Atomic|NSLock|NSMutableDictionary|ManagedAtomic)\b"),
    re.compile(r"nonisolated\(unsafe\)"),
]
sql = re.compile(r'"\s*(SELECT|INSERT|UPDATE|DELETE FROM|CREATE (TABLE|INDEX|VIRTUAL)|DROP TABLE|ALTER TABLE)\b|\btx\.(run|query|first|execute)\(')
spawn = re.compile(r"\bkiln_(spawn|forkpty)\(|\b(posix_spawn|forkpty|execve|execvp)\(")
lengths, long_lines = [], 0
for root, _, files in os.walk("Sources"):
    for f in files:
        if not f.endswith(".swift"):
            continue
        path = os.path.join(root, f)
        module = path.split(os.sep)[1]
        lines = open(path, encoding="utf-8").read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        lengths.append(len(lines))
        long_lines += sum(1 for l in lines if len(l) > 120)
        if len(lines) > MAX_LINES:
            problems.append(f"{path}: {len(lines)} lines (at most {MAX_LINES}); split it by idea")
        for n, line in enumerate(lines, 1):
            m = imp.match(line)
            if m and module in domains and m.group(1) in domains and m.group(1) != module:
                problems.append(f"{path}:{n}: domain {module} imports domain {m.group(1)}")
            if any(r.search(line) for r in registry) and ALLOW not in line and ALLOW not in (lines[n - 2] if n > 1 else ""):
                problems.append(f"{path}:{n}: static mutable state: hang it off a service the application builds")
            if spawn.search(line) and path != os.path.join("Sources", "KilnCore", "Process.swift"):
                problems.append(f"{path}:{n}: processes start through KilnCore (Sandbox.launch, ProcessRunner)")
            if module in domains and f not in ("Store.swift", "Migrations.swift") and sql.search(line):
                problems.append(f"{path}:{n}: SQL outside the domain's Store.swift")

# 3. The folder shape.
for d in domains:
    files = set(os.listdir(os.path.join("Sources", d)))
    text = "".join(open(os.path.join("Sources", d, f), encoding="utf-8").read() for f in files if f.endswith(".swift"))
    required = ["Module.swift", "Routes.swift", "Service.swift", "Models.swift"]
    if "CREATE TABLE" in text:
        required += ["Store.swift", "Migrations.swift"]
    for r in required:
        if r not in files:
            problems.append(f"Sources/{d}: no {r}")

if long_lines > MAX_LONG_LINES:
    problems.append(f"{long_lines} lines over 120 characters (at most {MAX_LONG_LINES}): wrap the new ones")
print(f"architecture: {len(domains)} domains, {len(lengths)} Swift files in Sources/, median {statistics.median(lengths):g} lines, "
      f"longest {max(lengths)}, {long_lines} lines over 120 characters")
for p in problems:
    print("  " + p)
if problems:
    print(f"architecture: {len(problems)} problem(s)")
    sys.exit(1)
print("architecture: ok")
PY
