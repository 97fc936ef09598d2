"""The compliance dashboard in a real browser: headless Chromium from Debian's packages
(``chromium``, ``chromium-driver``) driven by Selenium, against real ``callgate serve``
processes on 127.0.0.1 sharing one seeded SQLite database.

One server runs with the default idle limit; a second one, on the same database, with
``CALLGATE_UI_IDLE_MINUTES=0.05`` (3 seconds) for the automatic-logoff test.

Run alone: ``pytest tests/e2e/test_ui_browser.py -v`` (skips when /usr/bin/chromium or
/usr/bin/chromedriver is absent)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(
        "headless browser tests need Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")

from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from core.db import Database  # noqa: E402
from core.keys import Role, create_key  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.models import AuditEntry  # noqa: E402

REFUSED_PHONE = "+13145550101"  # no consent on file: refused at intake with NO_CONSENT
ORAL_PHONE = "+13145550102"  # oral consent only: CONSENT_NOT_WRITTEN
OK_PHONE = "+13145550100"
IDLE_MINUTES = 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _callgate() -> list[str]:
    exe = shutil.which("callgate", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "from api.cli import main; main()"]


class Server:
    def __init__(self, tmp: Path, db_url: str, name: str, **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "CALLGATE_DATABASE_URL": db_url,
                    "CALLGATE_LOG_LEVEL": "WARNING", **env}
        full_env.pop("CALLGATE_POLICY_FILE", None)
        self.proc = subprocess.Popen(
            [*_callgate(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=tmp, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"callgate serve did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ui-browser")
    db_url = f"sqlite:///{tmp / 'ui.db'}"
    upgrade(db_url)
    db = Database(db_url)
    now = datetime.now(UTC)
    keys: dict[str, str] = {}
    ids: dict[str, str] = {}
    for role in (Role.compliance, Role.dialer, Role.campaign_manager):
        row, plaintext = create_key(db, role, f"e2e-{role.value}", now)
        keys[role.value], ids[role.value] = plaintext, row.id
    main = Server(tmp, db_url, "main", CALLGATE_AUDIT_CHECKPOINT_SECONDS="0.5")
    idle = Server(tmp, db_url, "idle", CALLGATE_UI_IDLE_MINUTES=str(IDLE_MINUTES))
    try:
        _seed(main.url, keys["campaign_manager"], now)
        yield {"main": main, "idle": idle, "db": db, "keys": keys, "ids": ids}
    finally:
        main.stop()
        idle.stop()
        db.dispose()


def _seed(url: str, key: str, now: datetime) -> None:
    h = {"Authorization": f"Bearer {key}"}
    obtained = (now - timedelta(days=30)).isoformat()
    for phone, method in ((OK_PHONE, "written"), (ORAL_PHONE, "oral")):
        r = httpx.post(f"{url}/v1/consents", headers=h, json={
            "patient_ref": "MRN-1", "phone": phone, "channels": ["autodialed_voice"],
            "purposes": ["*"], "method": method, "obtained_at": obtained,
            "evidence_ref": "scan://consents/e2e.pdf#sha256=feed"})
        assert r.status_code == 201, r.text
    camp = httpx.post(f"{url}/v1/campaigns", headers=h, json={
        "name": "Cardiology discharge follow-up", "purpose": "discharge_followup",
        "channel": "autodialed_voice", "provider_name": "Mercy Heart Clinic",
        "callback_number": "+1 314 555 0199"})
    assert camp.status_code == 201, camp.text
    rows = [
        {"external_id": "enc-ok", "patient_ref": "MRN-1", "phone": OK_PHONE},
        {"external_id": "enc-refused", "patient_ref": "MRN-2", "phone": REFUSED_PHONE},
        {"external_id": "enc-oral", "patient_ref": "MRN-3", "phone": ORAL_PHONE},
    ]
    r = httpx.post(f"{url}/v1/campaigns/{camp.json()['id']}/calls", headers=h, json=rows)
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["queued", "refused", "refused"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,900",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _audit(db: Database, kind: str) -> list[AuditEntry]:
    with db.read() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == kind)
                              .order_by(AuditEntry.id)))


def _sign_in(driver: Any, base: str, key: str) -> None:
    driver.get(f"{base}/ui/login")
    field = driver.find_element(By.ID, "key")
    field.send_keys(key)
    field.submit()


def _row(driver: Any, external_id: str) -> Any:
    for tr in driver.find_elements(By.CSS_SELECTOR, "#refusals tbody tr"):
        if external_id in tr.text:
            return tr
    raise AssertionError(f"no row for {external_id} on {driver.current_url}")


def test_compliance_reviewer_journey(site: dict[str, Any], browser: Any) -> None:
    base, db, keys = site["main"].url, site["db"], site["keys"]
    actor = f"key:{site['ids']['compliance']}"
    wait = WebDriverWait(browser, 15)

    # Not signed in: sent to the sign-in page.
    browser.get(f"{base}/ui/refusals")
    assert browser.current_url.startswith(f"{base}/ui/login")

    _sign_in(browser, base, keys["compliance"])
    wait.until(EC.url_to_be(f"{base}/ui/"))
    assert "Audit log" in browser.page_source
    _checkpoint_shown(browser, base)

    # The refusal log shows the known refused row, phone masked, with its rule.
    browser.find_element(By.LINK_TEXT, "Refusals").click()
    wait.until(EC.url_to_be(f"{base}/ui/refusals"))
    row = _row(browser, "enc-refused")
    assert "+1314555****" in row.text
    assert REFUSED_PHONE not in browser.page_source
    assert "NO_CONSENT" in row.text
    assert "47 CFR 64.1200(a)(1)-(2)" in row.text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#refusals tbody tr")) == 2

    # Filter by code (GET parameters, no patient data in the URL).
    Select(browser.find_element(By.ID, "f-code")).select_by_value("NO_CONSENT")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait.until(EC.url_contains("code=NO_CONSENT"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#refusals tbody tr")
    assert len(rows) == 1
    assert rows[0].get_attribute("data-code") == "NO_CONSENT"
    # No digits of the number in the address (the host's port may hold any digits).
    address = urlsplit(browser.current_url)
    assert "555" not in address.path + "?" + address.query

    # Reveal the phone: a POST form; the page comes back with that row unmasked.
    before = len(_audit(db, "patient_data.unmask"))
    _row(browser, "enc-refused").find_element(By.CSS_SELECTOR, "button.reveal").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".revealed")))
    assert browser.find_element(By.CSS_SELECTOR, ".revealed").text == REFUSED_PHONE
    assert len(browser.find_elements(By.CSS_SELECTOR, "#refusals tbody tr")) == 1
    unmasks = _audit(db, "patient_data.unmask")
    assert len(unmasks) == before + 1
    assert unmasks[-1].actor == actor
    assert json.loads(unmasks[-1].payload)["via"] == "ui: reveal a refusal's number"
    assert REFUSED_PHONE not in unmasks[-1].payload

    # Export the current filter as CSV with the browser's session cookie.
    href = browser.find_element(By.ID, "csv-export").get_attribute("href")
    assert href == f"{base}/ui/refusals.csv?code=NO_CONSENT"
    cookie = browser.get_cookie("callgate_ui")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    csv_resp = httpx.get(href, cookies={"callgate_ui": cookie["value"]})
    assert csv_resp.status_code == 200
    assert csv_resp.headers["content-type"].startswith("text/csv")
    lines = csv_resp.text.strip().splitlines()
    assert lines[0].startswith("id,at,call_id")
    assert len(lines) == 2 and "enc-refused" in lines[1] and "NO_CONSENT" in lines[1]
    assert REFUSED_PHONE not in csv_resp.text
    anonymous = httpx.get(href, follow_redirects=False)
    assert anonymous.status_code == 303

    # Open the number's story from the row: the answer to a POST, the number in no URL.
    _row(browser, "enc-refused").find_element(By.CSS_SELECTOR, "button.story").click()
    wait.until(EC.url_to_be(f"{base}/ui/numbers/lookup"))
    assert REFUSED_PHONE in browser.find_element(By.TAG_NAME, "h1").text
    assert "555" not in urlsplit(browser.current_url).path
    timeline = browser.find_element(By.ID, "timeline").text
    assert "Refused at intake" in timeline and "NO_CONSENT" in timeline
    reads = [json.loads(e.payload) | {"actor": e.actor, "kind": e.kind}
             for kind in ("patient_data.read", "patient_data.list")
             for e in _audit(db, kind)]
    assert any(r["via"] == "ui: a number's story (from a log row)" and r["actor"] == actor
               for r in reads)
    assert any(r["via"] == "ui: refusal log" and r["actor"] == actor for r in reads)
    assert any(r["via"] == "ui: refusal log CSV" for r in reads)

    # Keyboard: the skip link is the first stop and is visible when focused.
    browser.find_element(By.TAG_NAME, "body").send_keys("\ue004")  # Tab
    focused = browser.switch_to.active_element
    assert focused.text == "Skip to main content"

    # Sign out.
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button").click()
    wait.until(EC.url_contains("/ui/login"))
    assert "You have signed out" in browser.page_source
    browser.get(f"{base}/ui/")
    assert browser.current_url.startswith(f"{base}/ui/login")


def _checkpoint_shown(browser: Any, base: str) -> str:
    """The overview shows a signed checkpoint (reloading until the first seal): its size."""
    deadline = time.monotonic() + 20
    while True:
        sig = browser.find_elements(By.ID, "cp-signature")
        if sig:
            assert sig[0].text == "valid"
            assert "Verified incrementally" in browser.find_element(By.ID, "cp-verified").text
            return str(browser.find_element(By.ID, "cp-size").text)
        if time.monotonic() > deadline:
            pytest.fail("the overview shows no signed checkpoint")
        time.sleep(0.3)
        browser.get(f"{base}/ui/")


def test_auditor_pages(site: dict[str, Any], browser: Any) -> None:
    """The audit log browser (filters, CSV), the access report by number and by patient
    reference (posted: the number in no URL), the checkpoint on the overview."""
    base, db, keys = site["main"].url, site["db"], site["keys"]
    wait = WebDriverWait(browser, 15)
    h = {"Authorization": f"Bearer {keys['compliance']}"}
    assert httpx.get(f"{base}/v1/consents", params={"phone": OK_PHONE}, headers=h
                     ).status_code == 200
    with db.read() as s:
        total = len(list(s.scalars(select(AuditEntry.id))))
    deadline = time.monotonic() + 20
    while httpx.get(f"{base}/v1/audit/checkpoint", headers=h).json()["size"] < total:
        assert time.monotonic() < deadline, "the log was not sealed"
        time.sleep(0.2)

    _sign_in(browser, base, keys["compliance"])
    wait.until(EC.url_to_be(f"{base}/ui/"))
    assert int(_checkpoint_shown(browser, base)) >= total

    # The audit log, newest first, filtered by kind and by actor.
    browser.find_element(By.LINK_TEXT, "Audit log").click()
    wait.until(EC.url_to_be(f"{base}/ui/audit"))
    assert browser.find_element(By.ID, "log-check").text == "passed"
    rows = browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
    assert rows and rows[0].get_attribute("id").startswith("entry-")
    indices = [int(r.get_attribute("id")[6:]) for r in rows]
    assert indices == sorted(indices, reverse=True)
    kind = browser.find_element(By.ID, "f-kind")
    kind.send_keys("patient_data.read")
    browser.find_element(By.ID, "f-actor").send_keys(f"key:{site['ids']['compliance']}")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait.until(EC.url_contains("kind=patient_data.read"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
    assert rows and all("patient_data.read" in r.text for r in rows)
    assert any("GET /v1/consents" in r.text for r in rows)
    assert OK_PHONE not in browser.page_source and "5550100" not in browser.page_source
    href = browser.find_element(By.ID, "csv-export").get_attribute("href")
    cookie = browser.get_cookie("callgate_ui")
    assert cookie is not None
    exported = httpx.get(href, cookies={"callgate_ui": cookie["value"]})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith(
        "text/csv")
    lines = exported.text.strip().splitlines()
    assert lines[0] == "index,at,actor,key_name,kind,subject,payload"
    assert len(lines) - 1 == len(rows) and "e2e-compliance" in lines[1]

    # The access report, by number: posted, rendered, the number in no URL.
    browser.find_element(By.LINK_TEXT, "Access report").click()
    wait.until(EC.url_to_be(f"{base}/ui/access"))
    browser.find_element(By.ID, "a-value").send_keys("(314) 555-0100")
    browser.find_element(By.CSS_SELECTOR, "#access-form button[type=submit]").click()
    wait.until(EC.presence_of_element_located((By.ID, "accesses")))
    assert browser.current_url == f"{base}/ui/access"
    report = browser.find_element(By.ID, "accesses").text
    assert "GET /v1/consents" in report and "e2e-compliance" in report
    # By patient reference: the same patient's accesses (its consent names the number).
    browser.find_element(By.CSS_SELECTOR, "input[name=by][value=patient_ref]").click()
    browser.find_element(By.ID, "a-value").send_keys("MRN-1")
    browser.execute_script("window.lastAnswer = true")
    browser.find_element(By.CSS_SELECTOR, "#access-form button[type=submit]").click()

    def by_reference(d: Any) -> str | None:
        # The answer to this post, not the last one's (read while the page is replaced).
        try:
            if d.execute_script("return window.lastAnswer === true"):
                return None
            return str(d.find_element(By.ID, "accesses").text)
        except WebDriverException:
            return None

    report = wait.until(by_reference)
    assert "GET /v1/consents" in report and "ui: access report" in report
    assert browser.current_url == f"{base}/ui/access"


def test_dialer_key_cannot_sign_in(site: dict[str, Any], browser: Any) -> None:
    base, db = site["main"].url, site["db"]
    before = len(_audit(db, "ui.login_refused"))
    _sign_in(browser, base, site["keys"]["dialer"])
    error = WebDriverWait(browser, 15).until(
        EC.presence_of_element_located((By.ID, "login-error")))
    assert "cannot sign in" in error.text
    assert browser.get_cookie("callgate_ui") is None
    browser.get(f"{base}/ui/refusals")
    assert browser.current_url.startswith(f"{base}/ui/login")
    refused = _audit(db, "ui.login_refused")
    assert len(refused) == before + 1
    assert refused[-1].actor == f"key:{site['ids']['dialer']}"


def test_idle_session_is_sent_back_to_login(site: dict[str, Any], browser: Any) -> None:
    base, db = site["idle"].url, site["db"]
    _sign_in(browser, base, site["keys"]["compliance"])
    WebDriverWait(browser, 15).until(EC.url_to_be(f"{base}/ui/"))
    browser.get(f"{base}/ui/refusals")
    assert browser.current_url == f"{base}/ui/refusals"
    # Left alone past the limit, the page takes itself off the screen (meta refresh) ...
    try:
        WebDriverWait(browser, 30).until(EC.url_contains("/ui/login"))
    except TimeoutException:  # pragma: no cover - diagnostic
        pytest.fail(f"still on {browser.current_url} after the idle limit")
    assert "signed out automatically" in browser.page_source
    assert REFUSED_PHONE not in browser.page_source
    # ... and the session is over: any page sends the browser back to sign in.
    browser.get(f"{base}/ui/refusals")
    assert browser.current_url.startswith(f"{base}/ui/login")
    offs = [json.loads(e.payload) for e in _audit(db, "ui.logoff")]
    assert {"reason": "idle_timeout"}.items() <= offs[-1].items()


# --- /docs and /redoc under the app's own CSP (issue 16) -------------------------------------


def _csp_errors(driver: Any) -> list[str]:
    try:
        logs = driver.get_log("browser")
    except Exception:  # a driver without the log endpoint
        return []
    return [e["message"] for e in logs
            if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]


def test_api_docs_render_without_a_cdn(site: dict[str, Any], browser: Any) -> None:
    base = site["main"].url
    r = httpx.get(f"{base}/docs")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "cdn" not in r.text.lower() and "<script>" not in r.text  # no inline script
    browser.get(f"{base}/docs")
    WebDriverWait(browser, 30).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/queue/lease", "/v1/campaigns/{campaign_id}/calls", "/v1/consents"} <= paths
    assert _csp_errors(browser) == []
    browser.get(f"{base}/redoc")
    WebDriverWait(browser, 30).until(
        EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "Lease up to"))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "/v1/queue/lease" in body or "Lease up to" in body
    # ReDoc's "API docs by Redocly" badge points at its CDN: blocked, as it should be (no
    # request leaves for a CDN); no script, style or worker is refused.
    assert [m for m in _csp_errors(browser) if "Loading the image" not in m] == []


HELD_PHONE = "+13145550177"  # texts "please don't text me": held for a human


def test_texts_held_for_review_decided_in_the_browser(site: dict[str, Any], browser: Any
                                                      ) -> None:
    """Issue 18: a text that reads like an opt-out waits on the texts page, masked; a
    compliance user revokes from the page (the form's CSRF token), the number lands on
    do-not-call, and the decision is audited with the user as actor."""
    base, db, keys = site["main"].url, site["db"], site["keys"]
    r = httpx.post(f"{base}/v1/sms/inbound", headers={
        "Authorization": f"Bearer {keys['dialer']}"}, json={
        "message_id": "browser-held-1", "from": HELD_PHONE, "body": "please don't text me",
        "received_at": datetime.now(UTC).isoformat()})
    assert r.status_code == 200 and r.json()["action"] == "review", r.text
    wait = WebDriverWait(browser, 15)
    _sign_in(browser, base, keys["compliance"])
    wait.until(EC.url_to_be(f"{base}/ui/"))
    browser.get(f"{base}/ui/texts")
    held = browser.find_element(By.ID, "held")
    assert "Held for review (1)" in held.text
    [row] = held.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert "please don't text me" in row.text and "+1314555****" in row.text
    assert HELD_PHONE not in browser.page_source
    row.find_element(By.CSS_SELECTOR, "button[value=revoke]").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "held"), "None waiting."))
    dnc = httpx.get(f"{base}/v1/dnc/{HELD_PHONE}",
                    headers={"Authorization": f"Bearer {keys['compliance']}"})
    assert dnc.status_code == 200, dnc.text
    decided = _audit(db, "sms.review.decided")
    assert decided and decided[-1].actor == f"key:{site['ids']['compliance']}"
    assert HELD_PHONE[2:] not in decided[-1].payload
