"""Opens the Hubble UI in headless Chromium (selenium + chromedriver, both
Debian's) and reports what a person would see, as JSON on stdout: the
service map's cards, the flows table's rows, the page's /api calls and
the browser's console. Waits until every expected text is on the page or
the time is up; the test judges the result.

    python3 hubble_ui_page.py URL SCREENSHOT.png SECONDS TEXT...
"""
import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, screenshot, wait_s, expected = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
profile = tempfile.mkdtemp(prefix="hubcap-ui-chromium.")
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--window-size=1600,1000", f"--user-data-dir={profile}"):
    options.add_argument(arg)
options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})

driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    started = time.time()
    driver.get(url)
    while True:
        body = driver.find_element(By.TAG_NAME, "body").text
        rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, '[class*="styles_row_"]')]
        # The service map's cards (HTML inside the map's SVG).
        cards = [c.get_attribute("textContent") for c in
                 driver.find_elements(By.CSS_SELECTOR, '.visible-cards [class*="styles_baseCard_"]')]
        seen = all(t in body for t in expected) and rows and cards
        if seen or time.time() - started > wait_s:
            break
        time.sleep(1)
    driver.save_screenshot(screenshot)
    with open(screenshot.rsplit(".", 1)[0] + ".html", "w") as page:
        page.write(driver.page_source)
    api = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if "/api/" in response["url"]:
                api.append([response["status"], response["url"]])
    print(json.dumps({
        "seconds": round(time.time() - started, 1),
        "cards": cards,
        "rows": rows,
        "body": body[:4000],
        "api": api[:40],
        "console": [c["level"] + " " + c["message"][:300] for c in driver.get_log("browser")][:40],
    }))
finally:
    driver.quit()
