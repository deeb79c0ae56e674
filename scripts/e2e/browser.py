"""A real browser (headless Chromium via selenium, SE_OFFLINE=true) through Kiln, as a new user would:
first-run owner setup from the URL `kiln serve` prints, MFA enrolment on the account page, sign out,
sign in again with a pyotp code; then the workspace app: open a project, quick-open a file, search and
click a result (landing on the marked line), a terminal (`echo $((6*7))` read back from xterm's buffer,
then reload and the replay), the tests as a job with their summary, a file whose text is markup (it
must stay text), an agent run against the scripted model (fake_llm.py, mode ui: its message carries
markup too) with a cost estimate, streamed text and a diff, rolled back; the run in the budget chart
and its receipt verified; an API key created after a step-up prompt; and no request to another origin.
Screenshots of each step go to OUT/screens/. Usage: python browser.py BIN_DIR OUT_DIR
"""
import os
import re
import socket
import subprocess
import json
import sys
import tempfile
import time

import sqlite3

import pyotp
from selenium import webdriver
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

bin_dir, out_dir = sys.argv[1], sys.argv[2]
shots = os.path.join(out_dir, "screens")
os.makedirs(shots, exist_ok=True)
results = []


def check(name, ok):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name, flush=True)


sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
data = tempfile.mkdtemp()
# A project: a pytest suite, a README whose text is markup, a long file.
roots = tempfile.mkdtemp()
demo = os.path.join(roots, "demo")
os.makedirs(os.path.join(demo, "src"))
files = {
    "src/__init__.py": "",
    "src/calc.py": "def add(a, b):\n    return a + b\n",
    "test_calc.py": "from src.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "pytest.ini": "[pytest]\n",
    "README.md": "# Demo\n\n<img src=x onerror=\"window.__xss=1\"> <script>window.__xss=2</script> [x](javascript:window.__xss=3)\n",
    "long.txt": "".join(f"line {i}\n" for i in range(1, 3001)),
}
for name, text in files.items():
    with open(os.path.join(demo, name), "w") as f:
        f.write(text)
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); llm_port = sock.getsockname()[1]; sock.close()
llm = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_llm.py"), str(llm_port), "ui"])
# A site for the browser checks page, on a loopback address of its own that only it is allowed
# (--allow-private-network 127.0.0.2/32), so the rest of 127.0.0.0/8 stays refused.
site = tempfile.mkdtemp()
with open(os.path.join(site, "index.html"), "w") as f:
    f.write("<!doctype html><html lang=en><head><title>UI site</title></head><body><h1>Hello from the site</h1></body></html>")
sock = socket.socket(); sock.bind(("127.0.0.2", 0)); site_port = sock.getsockname()[1]; sock.close()
site_server = subprocess.Popen([sys.executable, "-m", "http.server", str(site_port), "--bind", "127.0.0.2", "--directory", site],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
server = subprocess.Popen([os.path.join(bin_dir, "kiln"), "serve", "--port", str(port), "--data-dir", data,
                           "--allow-private-network", "127.0.0.2/32",
                           "--projects-root", roots, "--llm-base-url", f"http://127.0.0.1:{llm_port}/v1",
                           "--llm-model", "gpt-4o-mini", "--notebook-python", sys.executable],
                          stdout=subprocess.PIPE, stderr=open(os.path.join(out_dir, "browser-serve.log"), "w"), text=True, cwd=os.getcwd())
setup_url = None
deadline = time.time() + 30
while time.time() < deadline and setup_url is None:
    line = server.stdout.readline()
    m = re.search(r"(http://\S+/setup\?token=kst_\w+)", line)
    if m:
        setup_url = m.group(1)
check("kiln serve printed a setup URL", setup_url is not None)

options = webdriver.ChromeOptions()
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,1400"]:
    options.add_argument(arg)
# The page's console, printed when a step fails.
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
wait = WebDriverWait(driver, 60)
n = 0


def shot(name):
    global n
    n += 1
    driver.save_screenshot(os.path.join(shots, f"{n:02d}-{name}.png"))


def fill(form_css, values):
    form = driver.find_element(By.CSS_SELECTOR, form_css)
    for k, v in values.items():
        el = form.find_element(By.NAME, k)
        el.clear()
        el.send_keys(v)
    return form


def visible(css):
    return wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None))


def terminal_text(tid):
    return driver.execute_script("return window.kilnTerminalText && window.kilnTerminalText(arguments[0])", tid) or ""


def unnamed_controls():
    """Visible buttons, inputs, selects and links without an accessible name (label, aria-label, text, title)."""
    return driver.execute_script("""
        return [...document.querySelectorAll('button, input, select, textarea, a[href]')].filter(e => e.offsetParent !== null)
          .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.textContent.trim() || e.title || e.placeholder || e.type === 'hidden'))
          .map(e => e.outerHTML.slice(0, 80));""")


def workspace_flow():
    where = visible("input[name=where]")
    where.send_keys(demo)
    where.submit()
    wait.until(EC.url_contains("/p/prj_"))
    global workspace_url
    workspace_url = driver.current_url.split("#")[0]
    visible("a.tree-file[data-path='README.md']")
    shot("project")
    check("open a project: its tree is listed", True)
    check(f"every visible control on the project page has an accessible name {unnamed_controls()}", not unnamed_controls())

    visible("a.tree-file[data-path='README.md']").click()
    visible(".file-view .src")
    shot("markup-file")
    text = visible(".file-view .src").text
    check("a file whose text is markup shows as text and runs nothing",
          "<img src=x" in text and "<script>" in text and driver.execute_script("return window.__xss") is None
          and not driver.find_elements(By.CSS_SELECTOR, ".file-view img, .file-view script"))

    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.CONTROL, "p")
    visible("#quick-input").send_keys("calcpy")
    wait.until(lambda d: "src/calc.py" in d.find_element(By.ID, "quick-list").text)
    shot("quick-open")
    visible("#quick-input").send_keys(Keys.ENTER)
    wait.until(EC.url_contains("/file/src/calc.py"))
    check("quick open (Ctrl+P, fuzzy) opens src/calc.py", "return a + b" in visible(".file-view .src").text)

    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.CONTROL, "p")
    visible("#quick-input").send_keys("@test_add")
    wait.until(lambda d: "test_calc.py:4" in d.find_element(By.ID, "quick-list").text)
    visible("#quick-input").send_keys(Keys.ENTER)
    wait.until(EC.url_contains("/file/test_calc.py#L4"))
    check("go to symbol (@test_add) opens its file at its line", bool(visible(".line-mark")))

    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.CONTROL, Keys.SHIFT, "f")
    q = visible(".search-form input[name=q]")
    q.send_keys("line 2999")
    q.submit()
    visible("a.hit").click()
    wait.until(EC.url_contains("long.txt#L2999"))
    mark = visible(".line-mark")
    time.sleep(0.3)
    # The marked band is where line 2999's number is, and on screen.
    ok = driver.execute_script("""
        const m = arguments[0].getBoundingClientRect(), code = document.querySelector('.file-view:not([hidden]) .code').getBoundingClientRect();
        const g = [...document.querySelectorAll('.file-view:not([hidden]) .gutter')].pop();
        const first = +g.textContent.split('\\n', 1)[0];
        const y = g.getBoundingClientRect().top + (2999 - first) * 20;
        return Math.abs(m.top - y) < 2 && m.top >= code.top && m.bottom <= code.bottom;""", mark)
    shot("search-hit")
    check(f"every visible control on the file view has an accessible name {unnamed_controls()}", not unnamed_controls())
    check("search, click a result: the file opens at line 2999, marked and in view", ok)

    visible("#btn-terminal").click()
    wait.until(EC.url_contains("/terminal/pty_"))
    tid = driver.current_url.split("/terminal/")[1]
    wait.until(lambda d: "$" in terminal_text(tid))
    driver.switch_to.active_element.send_keys("echo $((6*7))\n")
    wait.until(lambda d: "\n42" in terminal_text(tid))
    shot("terminal")
    check("terminal: echo $((6*7)) prints 42 in xterm's buffer", True)
    driver.refresh()
    wait.until(lambda d: "42" in terminal_text(tid))
    shot("terminal-replay")
    check("terminal: after a reload the replay shows it again", "echo $((6*7))" in terminal_text(tid))

    driver.get(driver.current_url.split("/terminal/")[0])
    visible("#run-tests").click()
    wait.until(lambda d: "passed" in visible(".job-result").text)
    shot("test-job")
    check("the tests as a job: pytest 1 passed", "pytest: 1 passed, 0 failed" in visible(".job-result").text)
    driver.refresh()
    wait.until(lambda d: "passed" in visible(".job-result").text)
    check("the job's output is back after a reload", "1 passed" in visible(".job-out").text)

    # An agent run: estimate, stream, diff, rollback; then the budget and the receipt.
    visible("#btn-agent").click()
    visible("textarea[name=prompt]").send_keys("take notes about this project")
    wait.until(lambda d: "Estimated cost $" in visible("section:not([hidden]) p[role=status]").text)
    shot("agent-estimate")
    check("the agent form shows a cost estimate before the run", True)
    visible("section:not([hidden]) form button[type=submit]").click()
    wait.until(EC.url_contains("/run/run_"))
    wait.until(lambda d: "Completed" in visible(".run-status").text)
    run_url = driver.current_url
    shot("agent-run")
    msg = visible(".run-log .msg").text
    check("the run's streamed text is shown (markdown rendered: bold)",
          "Recording what I see" in msg and bool(driver.find_elements(By.CSS_SELECTOR, ".run-log .msg strong")))
    hrefs = [a.get_attribute("href") or "" for a in driver.find_elements(By.CSS_SELECTOR, ".run-log a")]
    check("markup in the model's message stays text: no <img>, no javascript: link, nothing ran",
          "<img src=x" in msg and not driver.find_elements(By.CSS_SELECTOR, ".run-log img")
          and not any(h.lower().startswith("javascript:") for h in hrefs) and driver.execute_script("return window.__xss") is None)
    check("the file change is shown as a diff", "+written by the agent" in visible(".diff").text)
    check("… and the file is in the project", os.path.exists(os.path.join(demo, "notes", "agent.txt")))
    visible(".receipt button").click()
    wait.until(lambda d: "ok" in visible(".verify-result").text)
    check("the run's receipt verifies", visible(".verify-result").text.startswith("ok"))
    visible(".run-view .row button:not(.secondary)").click()
    wait.until(lambda d: "Rolled back" in visible(".run-status").text)
    shot("agent-rolled-back")
    check("rollback: the file the run created is gone again", not os.path.exists(os.path.join(demo, "notes", "agent.txt")))
    driver.get(driver.current_url.split("/run/")[0] + "/budget")
    visible(".chart")
    shot("budget")
    check("the run is in the budget chart (a bar for today)", len(driver.find_elements(By.CSS_SELECTOR, ".chart rect")) >= 1)
    driver.get(driver.current_url.split("/budget")[0] + "/receipts")
    visible("section:not([hidden]) .row button").click()
    wait.until(lambda d: visible("section:not([hidden]) .row p").text != "")
    check("the receipt chain verifies from the receipts page", visible("section:not([hidden]) .row p").text.startswith("ok"))

    # An API key after a step-up prompt: the session's last factor is made 20 minutes old (as if
    # time had passed) in the database, so creating a key asks for a code first.
    db = sqlite3.connect(os.path.join(data, "kiln.db"))
    db.execute("UPDATE sessions SET mfa_verified_at = mfa_verified_at - 1200000 WHERE mfa_verified_at IS NOT NULL")
    db.commit(); db.close()
    driver.get(driver.current_url.split("/w/")[0] + "/account.html")
    form = visible("#key-form")
    form.find_element(By.NAME, "name").send_keys("ci")
    form.find_element(By.NAME, "scopes").send_keys("workspace:list")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    visible("#dlg-stepup input").send_keys("a code is not a password")
    visible("#dlg-stepup button[type=submit]").click()
    wait.until(lambda d: visible("#stepup-error").text != "")
    check("a wrong secret in the step-up prompt is refused there", not driver.find_element(By.ID, "key-value").text)
    # With MFA on, step-up wants a code: one of a later step than the sign-in's, within the window.
    field = visible("#dlg-stepup input")
    while int(time.time() // 30) + 1 < step + 1:  # the sign-in may have used the next step already
        time.sleep(1)
    field.clear(); field.send_keys(totp.at(max(int(time.time() // 30), step + 1) * 30))
    shot("step-up")
    visible("#dlg-stepup button[type=submit]").click()
    wait.until(lambda d: d.find_element(By.ID, "key-value").text.startswith("kf_"))
    shot("api-key")
    check("an API key is created after the step-up prompt, shown once", driver.find_element(By.ID, "key-value").text.startswith("kf_"))

    # Workspace and instance admin pages.
    driver.get(driver.current_url.split("/account.html")[0] + "/w/")
    visible("#members-link").click()
    check("members page lists the owner with its role",
          wait.until(lambda d: "owner@example.com" in visible("section:not([hidden]) table").text))
    visible("#audit-link").click()
    f = visible("form[aria-label='Filter the audit trail']")
    f.find_element(By.NAME, "action").send_keys("project.loaded")
    f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "project.loaded" in visible("section:not([hidden]) tbody").text)
    check("the audit trail filtered by action", all("project.loaded" in r.text for r in driver.find_elements(By.CSS_SELECTOR, "section:not([hidden]) tbody tr")))
    visible("#admin-link").click()
    i = visible("form[aria-label='Invite someone'] input[name=email]")
    i.send_keys("newcomer@example.com")
    i.submit()
    wait.until(lambda d: "/register?invitation=kin_" in visible(".once").text)
    shot("admin")
    check("the instance admin page invites an address (a single-use link)", True)

    check(f"every visible control on the admin page has an accessible name {unnamed_controls()}", not unnamed_controls())
    # A phone: nothing wider than the screen on the project and file views.
    driver.set_window_size(390, 844)
    driver.get(workspace_url + "/file/src/calc.py")
    visible(".file-view .src")
    wide = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    shot("phone-file")
    check(f"390x844: the file view fits the screen (overflow {wide}px)", wide <= 0)
    driver.set_window_size(1100, 1400)

    # Secrets: set one through the form, reveal it (with a reason for the audit trail).
    driver.set_window_size(1100, 1400)
    visible("#secrets-link").click()
    form = visible("form[aria-label='Set a secret']")
    form.find_element(By.NAME, "name").send_keys("DEPLOY_TOKEN")
    form.find_element(By.NAME, "value").send_keys("deploy-token-value-1")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "DEPLOY_TOKEN" in visible("section:not([hidden]) tbody").text)
    visible("button[aria-label='Reveal DEPLOY_TOKEN']").click()
    wait.until(EC.alert_is_present())
    driver.switch_to.alert.send_keys("checking the browser flow")
    driver.switch_to.alert.accept()
    wait.until(lambda d: "deploy-token-value-1" in visible(".once").text)
    shot("secrets")
    check("secrets page: set a secret, list it without its value, reveal it", True)
    # Policy: a deny rule saved as JSON, then tried with a dry run.
    visible("#policies-link").click()
    editor = visible("textarea[aria-label='Policy document (JSON)']")
    editor.clear()
    editor.send_keys('{"rules": [{"id": "no-rm", "action": "shell.run", "effect": "deny", "when": {"command": "rm -rf"}}], "defaults": {}}')
    visible("section:not([hidden]) .row button").click()
    wait.until(lambda d: "Saved as version 1" in visible("section:not([hidden]) p[role=status]").text)
    ev = visible("form[aria-label='Try the policy']")
    ev.find_element(By.NAME, "action").send_keys("shell.run")
    ev.find_element(By.NAME, "context").send_keys('{"command": "rm -rf /tmp/x"}')
    ev.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "deny" in driver.find_elements(By.CSS_SELECTOR, "section:not([hidden]) p[role=status]")[-1].text)
    shot("policy")
    check("policy page: save a rule (version 1), the dry run says deny (rule no-rm)",
          "no-rm" in driver.find_elements(By.CSS_SELECTOR, "section:not([hidden]) p[role=status]")[-1].text)

    # Approvals: a rule holds "echo held…" (self-approval allowed); the command form says so, and the
    # approvals page approves it, which starts the job.
    editor = visible("textarea[aria-label='Policy document (JSON)']")
    editor.clear()
    editor.send_keys('{"rules": [{"id": "hold", "action": "shell.run", "effect": "require_approval", "self_approval": true, "when": {"command": "^echo held"}}], "defaults": {}}')
    visible("section:not([hidden]) .row button").click()
    wait.until(lambda d: "Saved as version 2" in visible("section:not([hidden]) p[role=status]").text)
    driver.get(workspace_url)
    cmd = visible("form[aria-label='Run a command'] input[name=command]")
    cmd.send_keys("echo held-and-approved")
    cmd.submit()
    wait.until(lambda d: "Held for approval" in d.find_element(By.TAG_NAME, "body").text)
    visible("#approvals-link").click()
    visible("button[aria-label^='Approve shell.run']").click()
    wait.until(lambda d: "approved · job job_" in visible("section:not([hidden]) p[role=status]").text)
    shot("approvals")
    check("approvals: a held command is announced, listed, approved on the page, and its job starts", True)

    # The tool registry: register a server (the outbound guard refuses its loopback address, and the
    # page says so), then call one of Kiln's own tools from the catalogue.
    visible("#mcp-link").click()
    visible("section:not([hidden]) details summary").click()
    reg = visible("form[aria-label='Register an MCP server']")
    reg.find_element(By.NAME, "name").send_keys("local")
    reg.find_element(By.NAME, "target").send_keys("http://127.0.0.1:9/mcp")
    reg.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "Registered local" in visible("section:not([hidden]) p[role=status]").text)
    visible("button[aria-label='Refresh local']").click()
    wait.until(lambda d: "private or reserved" in visible("section:not([hidden]) p[role=status]").text)
    check("tools page: a server is registered, and refreshing it shows the outbound guard's refusal", True)
    Select(visible("select[aria-label='Tool']")).select_by_value("kiln.list_projects")
    visible("form[aria-label='Call a tool'] button[type=submit]").click()
    wait.until(lambda d: "demo" in visible("pre[aria-label='Tool result']").text)
    shot("tools")
    check("tools page: a catalogue tool is called from the page and its result shown", True)

    # A notebook: made from the project's notebooks page, a code cell run with Shift-Enter on a real
    # kernel, its output shown and saved.
    driver.get(workspace_url + "/notebooks")
    nf = visible("form[aria-label='New notebook']")
    nf.find_element(By.NAME, "path").send_keys("ui.ipynb")
    nf.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    visible("section:not([hidden]).notebook")
    driver.find_element(By.XPATH, "//section[not(@hidden)]//button[text()='+ code']").click()
    src = visible("section:not([hidden]) textarea.nb-src")
    src.send_keys("print(6 * 7)")
    src.send_keys(Keys.SHIFT, Keys.ENTER)
    wait.until(lambda d: "42" in visible("section:not([hidden]) .nb-outputs").text)
    wait.until(lambda d: "[1]" in visible("section:not([hidden]) .nb-count").text)
    shot("notebook")
    saved = json.load(open(os.path.join(demo, "ui.ipynb")))
    check("notebook page: a cell run with Shift-Enter shows 42 and the output is saved in the file",
          saved["cells"][0]["outputs"][0]["text"] in (["42\n"], "42\n"))

    # Collab: the activity panel lists the run; the bell counts the run's notification and clearing
    # it on the notifications page updates the bell live; a share link made in the run's dialog opens
    # its read-only page; an invitation made on the invite page is taken up through /invite/<token>
    # by someone new who registers there and lands in the workspace, then asks for a review.
    ws_id = workspace_url.split("/w/")[1].split("/")[0]
    visible("#activity-link").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "section:not([hidden]) .feed li[data-kind='run.completed']"))
    shot("activity")
    check("activity page: the agent run is in the workspace's feed", True)
    wait.until(lambda d: d.find_element(By.ID, "bell-count").text not in ("", "0"))
    check("the bell counts the unread notification of the run that ended", True)
    visible("#bell").click()
    wait.until(lambda d: "Your agent run completed" in visible("section:not([hidden]) .feed").text)
    driver.find_element(By.XPATH, "//section[not(@hidden)]//button[text()='Mark all read']").click()
    wait.until(lambda d: not d.find_element(By.ID, "bell-count").is_displayed())
    shot("notifications")
    check("notifications page: marking all read clears the bell live", True)
    check(f"every visible control on the notifications page has an accessible name {unnamed_controls()}", not unnamed_controls())
    driver.get(run_url)
    wait.until(EC.element_to_be_clickable((By.XPATH, "//section[not(@hidden)]//button[text()='Share…']"))).click()
    dlg = visible("dialog[aria-label='Share']")
    dlg.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "dialog input[aria-label='Link']").get_attribute("value"))
    shared = driver.find_element(By.CSS_SELECTOR, "dialog input[aria-label='Link']").get_attribute("value")
    shot("share-dialog")
    driver.get(shared)
    check("share dialog: the link opens the run's read-only page",
          "Shared agent run" in driver.page_source and "take notes about this project" in driver.page_source)
    # Browser checks: the allowlist saved on the page, a smoke run started there, its screenshot shown.
    driver.get(f"{workspace_url.split('/w/')[0]}/w/{ws_id}")
    visible("#browser-link").click()
    allow = visible("textarea[aria-label='Allowed origins, one per line']")
    allow.clear()
    allow.send_keys(f"http://127.0.0.2:{site_port}  the UI test site")
    driver.find_element(By.XPATH, "//section[not(@hidden)]//button[text()='Save the allowlist']").click()
    wait.until(lambda d: "Saved." in d.find_element(By.XPATH, "//section[not(@hidden)]//button[text()='Save the allowlist']/following-sibling::p").text)
    bf = visible("form[aria-label='Run a browser check']")
    bf.find_element(By.NAME, "url").send_keys(f"http://127.0.0.2:{site_port}/")
    bf.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(EC.url_contains("/browser-run/brun_"))
    WebDriverWait(driver, 60).until(lambda d: "passed" in visible("section:not([hidden]) p[role=status]").text)
    WebDriverWait(driver, 15).until(lambda d: d.execute_script(
        "const i = document.querySelector('section:not([hidden]) .shots img'); return !!i && i.complete && i.naturalWidth > 0"))
    shot("browser-run")
    check("browser page: the allowlist is saved, a smoke run passes and its screenshot is shown",
          "UI site" in visible("section:not([hidden]) p[role=status]").text)
    check(f"every visible control on the browser run page has an accessible name {unnamed_controls()}", not unnamed_controls())

    driver.get(f"{workspace_url.split('/w/')[0]}/w/{ws_id}/invite")
    inv = visible("form[aria-label='Invite someone']")
    inv.find_element(By.NAME, "email").send_keys("friend@example.com")
    inv.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "Invitation mailed" in visible("section:not([hidden]) p[role=status]").text)
    check("invite page: an invitation is mailed and listed as pending", "pending" in visible("section:not([hidden]) table").text)
    link = None
    for name in sorted(os.listdir(os.path.join(data, "outbox"))):
        text = open(os.path.join(data, "outbox", name)).read()
        m = re.search(r"http://\S+/invite/kwi_\w+", text)
        if "To: friend@example.com" in text and m:
            link = m.group(0)
    driver.delete_all_cookies()
    driver.get(link)
    form = visible("#invite-register-form")
    fill("#invite-register-form", {"name": "Friend", "password": "another long password"})
    shot("invite-page")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(EC.url_contains(f"/w/{ws_id}"))
    check("the invitation page registers someone new, who lands in the workspace", True)
    visible("#reviews-link").click()
    rf = visible("form[aria-label='Request a review']")
    rf.find_element(By.NAME, "id").send_keys(run_url.split("/run/")[1])
    Select(rf.find_element(By.NAME, "reviewers")).select_by_index(0)
    rf.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(EC.url_contains("/review/rev_"))
    wait.until(lambda d: "Review:" in visible("section:not([hidden]) h1").text)
    shot("review")
    check("reviews page: the new member asks the owner for a review of the run", "waiting" in visible("section:not([hidden])").text)

    # Nothing came from another origin (every resource the pages loaded was this server's).
    origin = driver.current_url.split("/w/")[0]
    foreign = [e["name"] for e in driver.execute_script("return performance.getEntriesByType('resource').map(e => ({name: e.name}))")
               if not e["name"].startswith(origin)]
    check("no page loads anything from another origin", not foreign)


try:
    email, password = "owner@example.com", "correct horse battery staple"
    driver.get(setup_url)
    wait.until(EC.visibility_of_element_located((By.ID, "setup-form")))
    fill("#setup-form", {"email": email, "name": "Owner", "password": password})
    shot("setup-form")
    driver.find_element(By.CSS_SELECTOR, "#setup-form button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "setup-result"), "Account created"))
    shot("setup-done")
    check("first-run setup through the page", "Account created" in driver.find_element(By.ID, "setup-result").text)

    driver.find_element(By.ID, "setup-login").click()
    wait.until(EC.visibility_of_element_located((By.ID, "login-form")))
    fill("#login-form", {"email": email, "password": password}).submit()
    wait.until(EC.url_contains("/w/ws_"))
    driver.get(driver.current_url.split("/w/")[0] + "/account.html")
    wait.until(EC.text_to_be_present_in_element((By.ID, "mfa-state"), "Off"))
    shot("account")
    check("signed in to the account page", "Your account" in driver.page_source)

    driver.find_element(By.ID, "mfa-start").click()
    wait.until(EC.visibility_of_element_located((By.ID, "mfa-secret")))
    wait.until(lambda d: d.find_element(By.ID, "mfa-secret").text.strip() != "")
    secret = driver.find_element(By.ID, "mfa-secret").text.strip()
    codes = driver.find_elements(By.CSS_SELECTOR, "#mfa-recovery li")
    shot("mfa-enrolment")
    check("MFA enrolment shows the secret and 10 recovery codes", len(secret) >= 16 and len(codes) == 10)
    totp = pyotp.TOTP(secret)
    enrol_step = int(time.time() // 30)
    fill("#mfa-confirm-form", {"code": totp.at(enrol_step * 30)})
    driver.find_element(By.ID, "mfa-confirm").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "mfa-state"), "On"))
    shot("mfa-on")
    check("MFA turned on with a pyotp code", "On" in driver.find_element(By.ID, "mfa-state").text)

    driver.find_element(By.ID, "logout").click()
    wait.until(EC.url_contains("/login.html"))
    wait.until(EC.visibility_of_element_located((By.ID, "login-form")))
    shot("signed-out")
    fill("#login-form", {"email": email, "password": password}).submit()
    wait.until(EC.visibility_of_element_located((By.ID, "mfa-form")))
    check("the password form is hidden once the code is asked for",
          not driver.find_element(By.ID, "login-form").is_displayed())
    shot("mfa-step")
    check("sign-in asks for the second factor", driver.find_element(By.ID, "mfa-form").is_displayed())
    # A step after the enrolment's (each step is accepted once) and within ±1 of now.
    step = max(int(time.time() // 30), enrol_step + 1)
    fill("#mfa-form", {"code": totp.at(step * 30)}).submit()
    wait.until(EC.url_contains("/w/ws_"))
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "input[name=where]")))
    shot("signed-in-with-mfa")
    check("signed in again with password and TOTP code, landing in the workspace", "/w/ws_" in driver.current_url)
    workspace_flow()
except Exception as e:  # a step that did not happen: record it with a screenshot
    shot("failure")
    check(f"browser flow ({type(e).__name__}: {e})", False)
    try:
        print("     status bar:", driver.execute_script("return document.querySelector('#st-msg')?.textContent"))
    except Exception:
        pass
    for entry in driver.get_log("browser")[-20:]:
        print("     console:", entry.get("level"), entry.get("message", "")[:300])
finally:
    driver.quit()
    llm.terminate()
    site_server.terminate()
    server.terminate()
    server.wait(timeout=15)

passed = sum(results)
print(f"browser e2e: {passed} passed, {len(results) - passed} failed")
sys.exit(0 if all(results) else 1)
