"""Page weight and speed of the workspace UI in headless Chromium, from its performance entries.

Usage: ui_bench.py BASE_URL EMAIL PASSWORD WS PROJECT BIG_FILE RUNS
Prints medians over RUNS fresh browser profiles (nothing cached):
  - bytes transferred by the first load of a project view, the app shell apart from vendor files;
  - navigation start → the file tree rendered (mark kiln:tree-rendered);
  - a 5 MB file's first screen: view requested → first slice painted (marks kiln:file-*), and from navigation;
  - search for a common word: response received → results painted (marks kiln:search-*);
  - baseline: navigation → load of a static page of this server with nothing on it (/healthz),
    the floor this machine and browser set.
"""
import json, statistics, sys, time, urllib.request
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE, EMAIL, PASSWORD, WS, PRJ, BIG, RUNS = sys.argv[1:8]
RUNS = int(RUNS)


def browser():
    o = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"]:
        o.add_argument(a)
    d = webdriver.Chrome(options=o)
    d.set_script_timeout(30)
    return d


def login(d):
    """Signs in over HTTP and hands the browser only the session cookie, so the project view is the
    first page it loads from this server (nothing of the app in its cache)."""
    req = urllib.request.Request(BASE + "/auth/login", data=json.dumps({"email": EMAIL, "password": PASSWORD}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req) as r:
        cookie = r.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    d.get(BASE + "/healthz")
    d.add_cookie({"name": "kiln_session", "value": cookie, "path": "/"})


def mark(d, name, timeout=30):
    WebDriverWait(d, timeout).until(lambda d: d.execute_script("return performance.getEntriesByName(arguments[0]).length", name))
    return d.execute_script("return performance.getEntriesByName(arguments[0]).pop().startTime", name)


results = {k: [] for k in ["shell_bytes", "vendor_bytes", "tree_ms", "file_ms", "file_nav_ms", "search_ms", "baseline_ms"]}
for run in range(RUNS):
    d = browser()
    try:
        d.get(BASE + "/healthz")
        results["baseline_ms"].append(d.execute_script("const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd || n.responseEnd"))
        login(d)
        d.get(f"{BASE}/w/{WS}/p/{PRJ}")
        results["tree_ms"].append(mark(d, "kiln:tree-rendered"))
        time.sleep(0.5)
        entries = d.execute_script("""return [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]
            .map(e => ({name: e.name, size: e.transferSize, initiator: e.initiatorType}))""")
        # The app shell: the page, its CSS and JS modules (not API answers, not vendor files).
        shell = [e for e in entries if "/api/" not in e["name"] and "/vendor/" not in e["name"]]
        results["shell_bytes"].append(sum(e["size"] for e in shell))
        d.get(f"{BASE}/w/{WS}/p/{PRJ}/file/{BIG}")
        first = mark(d, "kiln:file-first-screen")
        results["vendor_bytes"].append(d.execute_script(
            "return performance.getEntriesByType('resource').filter(e => e.name.includes('/vendor/')).reduce((a, e) => a + e.transferSize, 0)"))
        results["file_ms"].append(first - mark(d, "kiln:file-requested"))
        results["file_nav_ms"].append(first)
        d.get(f"{BASE}/w/{WS}/p/{PRJ}/search?q=return")
        painted = mark(d, "kiln:search-painted")
        results["search_ms"].append(painted - mark(d, "kiln:search-response"))
        hits = d.execute_script("return document.querySelectorAll('a.hit').length")
    finally:
        d.quit()
    print(f"  run {run + 1}: shell {results['shell_bytes'][-1]} B, tree {results['tree_ms'][-1]:.0f} ms, "
          f"5 MB file {results['file_ms'][-1]:.0f} ms ({results['file_nav_ms'][-1]:.0f} from navigation), "
          f"search paint {results['search_ms'][-1]:.0f} ms ({hits} hits shown), baseline {results['baseline_ms'][-1]:.0f} ms", flush=True)

med = {k: statistics.median(v) for k, v in results.items()}
goal = lambda ok: "met" if ok else "NOT met"
print(f"first load, app shell without vendor files: {med['shell_bytes'] / 1024:.1f} KiB transferred (goal < 200 KB: {goal(med['shell_bytes'] < 200_000)}); vendor files {med['vendor_bytes'] / 1024:.1f} KiB more for a file view (highlight.js, gzip; cached immutable after)")
print(f"navigation → file tree rendered (30,000-file project): {med['tree_ms']:.0f} ms (goal < 1000: {goal(med['tree_ms'] < 1000)}); baseline empty page load {med['baseline_ms']:.0f} ms")
print(f"5 MB file, view requested → first screen painted: {med['file_ms']:.0f} ms (goal < 500: {goal(med['file_ms'] < 500)}); from navigation {med['file_nav_ms']:.0f} ms")
print(f"search for a common word, response → results painted: {med['search_ms']:.0f} ms (goal < 300: {goal(med['search_ms'] < 300)})")
print(f"({RUNS} runs, fresh browser profile each, medians)")
