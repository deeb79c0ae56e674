"""A real browser (headless Chromium via selenium, SE_OFFLINE=true) through Kiln's pages:
first-run owner setup from the URL `kiln serve` prints, MFA enrolment on the account page,
sign out, and sign in again through the form with a pyotp code. Screenshots of each step go to
OUT/screenshots/. Usage: python browser.py BIN_DIR OUT_DIR
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import pyotp
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

bin_dir, out_dir = sys.argv[1], sys.argv[2]
shots = os.path.join(out_dir, "screenshots")
os.makedirs(shots, exist_ok=True)
results = []


def check(name, ok):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name, flush=True)


sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
data = tempfile.mkdtemp()
server = subprocess.Popen([os.path.join(bin_dir, "kiln"), "serve", "--port", str(port), "--data-dir", data],
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
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
wait = WebDriverWait(driver, 15)
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
    wait.until(EC.url_contains("/account.html"))
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
    wait.until(EC.url_contains("/account.html"))
    wait.until(EC.text_to_be_present_in_element((By.ID, "mfa-state"), "On"))
    shot("signed-in-with-mfa")
    check("signed in again with password and TOTP code", "account.html" in driver.current_url)
except Exception as e:  # a step that did not happen: record it with a screenshot
    shot("failure")
    check(f"browser flow ({type(e).__name__}: {e})", False)
finally:
    driver.quit()
    server.terminate()
    server.wait(timeout=15)

passed = sum(results)
print(f"browser e2e: {passed} passed, {len(results) - passed} failed")
sys.exit(0 if all(results) else 1)
