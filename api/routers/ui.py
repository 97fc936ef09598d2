"""The compliance reviewer's dashboard: server-rendered pages under ``/ui``.

HTTP only: sessions live in :mod:`dialer.ui_sessions`, figures, filters, reveals and the
audit of every patient-data view in :mod:`dialer.dashboard`, the logs in :mod:`dialer.review`.
Every response here is ``Cache-Control: no-store``; a request without a live session is sent
to the sign-in page; every POST carries the session's CSRF token. Pages are left out of the
OpenAPI document (they are not part of the JSON contract).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from api.deps import RuntimeDep
from config.errors import DomainError
from config.reasons import Code
from consent.phones import mask
from review import access, dashboard, exports
from review import audit as audit_view
from review import logs as review
from review import sessions as ui_sessions
from review import texts as texts_view
from review.sessions import UiUser
from texts import service as text_service

STATIC_PATH = "/ui/static"
LOGIN = "/ui/login"
NOTICES = {
    ui_sessions.LOGOUT: "You have signed out.",
    ui_sessions.IDLE: "You were signed out automatically after a period without activity.",
    ui_sessions.ABSOLUTE: "Your session reached its time limit; please sign in again.",
    ui_sessions.KEY_REVOKED: "Your key is no longer valid for the dashboard.",
}


def _utc(value: datetime | None, seconds: bool = True) -> str:
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("api", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = _utc
    env.filters["ts"] = lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if v else ""
    env.filters["mask"] = lambda p: mask(p) if p else ""
    env.globals["static"] = lambda name: f"{STATIC_PATH}/{name}"
    env.globals["flag_labels"] = dashboard.FLAG_LABELS
    return env


templates = Jinja2Templates(env=_environment())


def static_files() -> StaticFiles:
    """The stylesheet, from the installed package (works after a non-editable install)."""
    return StaticFiles(directory=str(files("api") / "static"))


class LoginRequired(Exception):
    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "login required")
        self.reason = reason


class CsrfRejected(Exception):
    pass


def _login_redirect(reason: str | None) -> RedirectResponse:
    url = LOGIN + (f"?{urlencode({'reason': reason})}" if reason else "")
    resp = RedirectResponse(url, status_code=303)
    resp.delete_cookie(ui_sessions.COOKIE, path="/ui")
    return resp


class UiRoute(APIRoute):
    """Turns "no live session" into a redirect to sign in, a failed CSRF check into a 403
    page and a domain error into an error page; marks every response ``no-store``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired as exc:
                response = _login_redirect(exc.reason)
            except CsrfRejected:
                response = _error(request, 403, "This form has expired or did not come from "
                                  "this site. Go back, reload the page and try again.")
            except DomainError as exc:
                response = _error(request, 400, exc.message)
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
            return response

        return guarded


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=UiRoute)


def _error(request: Request, status: int, message: str) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "error.html", {"message": message, "user": None, "nav": ""},
        status_code=status,
    )


# --- session dependencies -------------------------------------------------------------------


def ui_user(request: Request, rt: RuntimeDep) -> UiUser:
    resumed = ui_sessions.resume(rt, request.cookies.get(ui_sessions.COOKIE))
    if resumed.user is None:
        raise LoginRequired(resumed.ended)
    return resumed.user


User = Annotated[UiUser, Depends(ui_user)]


def form_user(user: User, csrf: Annotated[str, Form(max_length=200)] = "") -> UiUser:
    if not ui_sessions.same_token(user.csrf_token, csrf):
        raise CsrfRejected
    return user


FormUser = Annotated[UiUser, Depends(form_user)]


def _page(
    request: Request, rt: RuntimeDep, name: str, user: UiUser, nav: str,
    status_code: int = 200, **context: Any,
) -> HTMLResponse:
    idle = rt.settings.ui_idle_minutes * 60
    return templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "csrf": user.csrf_token,
            "nav": nav,
            # The page leaves the screen when the session would have timed out (no script:
            # a meta refresh), so patient data does not stay on an unattended display.
            "refresh_seconds": max(1, int(idle + 1)),
            "idle_minutes": rt.settings.ui_idle_minutes,
            "now": rt.clock.now(),
            **context,
        },
        status_code=status_code,
    )


# --- sign in / sign out ---------------------------------------------------------------------


def _login_page(
    request: Request, status: int, error: str | None, notice: str | None, signed_in: bool
) -> HTMLResponse:
    token = ui_sessions.new_token()
    resp = templates.TemplateResponse(
        request,
        "login.html",
        {"user": None, "nav": "", "login_csrf": token, "error": error, "notice": notice,
         "signed_in": signed_in},
        status_code=status,
    )
    resp.set_cookie(
        ui_sessions.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/ui",
        secure=_secure(request),
    )
    return resp


def _secure(request: Request) -> bool:
    """Cookies are Secure over HTTPS: the request's scheme (a trusted proxy's
    X-Forwarded-Proto, see CALLGATE_TRUSTED_PROXIES) or CALLGATE_HTTPS."""
    https: bool = request.app.state.runtime.settings.https
    return https or request.url.scheme == "https"


@router.get("/login", name="ui_login_form")
def login_form(request: Request, rt: RuntimeDep, reason: str | None = None) -> HTMLResponse:
    # Looking does not count as activity: an expired session is ended (and audited) here.
    resumed = ui_sessions.resume(rt, request.cookies.get(ui_sessions.COOKIE), touch=False)
    if resumed.user is not None:
        return _login_page(request, 200, None, None, True)
    shown = resumed.ended if resumed.ended in NOTICES else reason
    return _login_page(request, 200, None, NOTICES.get(shown or ""), False)


@router.post("/login", name="ui_login")
def login(
    request: Request,
    rt: RuntimeDep,
    key: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    # Counted before anything else is looked at: the client address is the one uvicorn took
    # from a trusted proxy's X-Forwarded-For (CALLGATE_TRUSTED_PROXIES), else the peer's.
    source = ui_sessions.source_of(request.client.host if request.client else None)
    wait = ui_sessions.throttle(rt, source)
    if wait is not None:
        page = _login_page(request, 429, "Too many sign-in attempts from your address. "
                           f"Try again in {wait} seconds.", None, False)
        page.headers["Retry-After"] = str(wait)
        return page
    if not ui_sessions.same_token(request.cookies.get(ui_sessions.LOGIN_CSRF_COOKIE), csrf):
        return _login_page(request, 403, "The sign-in form expired. Please try again.", None,
                           False)
    if not key.strip():
        return _login_page(request, 400, "Enter your API key.", None, False)
    try:
        token, _user = ui_sessions.login(rt, key, source)
    except ui_sessions.LoginRefused as exc:
        return _login_page(request, 403, exc.message, None, False)
    resp = RedirectResponse("/ui/", status_code=303)
    resp.set_cookie(
        ui_sessions.COOKIE, token, httponly=True, samesite="strict", path="/ui",
        secure=_secure(request),
    )
    resp.delete_cookie(ui_sessions.LOGIN_CSRF_COOKIE, path="/ui")
    return resp


@router.post("/logout", name="ui_logout")
def logout(rt: RuntimeDep, user: FormUser) -> Response:
    ui_sessions.logout(rt, user)
    return _login_redirect(ui_sessions.LOGOUT)


# --- overview ---------------------------------------------------------------------------------


@router.get("/", name="ui_overview")
def overview(request: Request, rt: RuntimeDep, user: User) -> HTMLResponse:
    return _page(request, rt, "overview.html", user, "overview", ov=dashboard.overview(rt))


# --- the refusal log --------------------------------------------------------------------------


def _refusals_page(
    request: Request, rt: RuntimeDep, user: UiUser, params: dict[str, str],
    cursor: str | None, revealed: dict[int, str],
) -> HTMLResponse:
    camps = dashboard.campaigns(rt)
    f, form = dashboard.refusal_filter(params, [c.id for c in camps])
    page = review.list_refusals(rt, user.identity, f, limit=dashboard.PAGE_SIZE,
                                cursor=cursor or None, via="ui: refusal log")
    query = {k: v for k, v in form.values.items() if v}
    return _page(
        request, rt, "refusals.html", user, "refusals",
        items=page.items, revealed=revealed, form=form, campaigns=camps,
        names={c.id: c.name for c in camps}, codes=[c.value for c in Code],
        stages=dashboard.STAGES, cursor=cursor or "",
        next_url=("/ui/refusals?" + urlencode({**query, "cursor": page.next_cursor}))
        if page.next_cursor else None,
        csv_url="/ui/refusals.csv" + (f"?{urlencode(query)}" if query else ""),
    )


@router.get("/refusals", name="ui_refusals")
def refusals(request: Request, rt: RuntimeDep, user: User) -> HTMLResponse:
    params = dict(request.query_params)
    return _refusals_page(request, rt, user, params, params.get("cursor"), {})


FormText = Annotated[str, Form(max_length=512)]


@router.post("/refusals/reveal", name="ui_reveal_refusal")
def reveal(
    request: Request,
    rt: RuntimeDep,
    user: FormUser,
    refusal_id: Annotated[int, Form(ge=1, le=2**63 - 1)],
    since: FormText = "",
    until: FormText = "",
    campaign_id: FormText = "",
    code: FormText = "",
    stage: FormText = "",
    cursor: FormText = "",
) -> HTMLResponse:
    """The same page, with one row's phone shown in full; the reveal is audited."""
    phone = dashboard.reveal_refusal(rt, user.identity, refusal_id)
    params = {"since": since, "until": until, "campaign_id": campaign_id, "code": code,
              "stage": stage}
    return _refusals_page(request, rt, user, params, cursor or None,
                          {refusal_id: phone} if phone else {})


def _csv(chunks: Any, filename: str) -> StreamingResponse:
    return StreamingResponse(
        chunks, media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/refusals.csv", name="ui_refusals_csv")
def refusals_csv(request: Request, rt: RuntimeDep, user: User) -> StreamingResponse:
    f, _form = dashboard.refusal_filter(
        dict(request.query_params), [c.id for c in dashboard.campaigns(rt)]
    )
    chunks = exports.export_refusals_csv(rt, user.identity, f, via="ui: refusal log CSV")
    return _csv(chunks, "refusals.csv")


# --- the call log -----------------------------------------------------------------------------


@router.get("/calls", name="ui_calls")
def calls(request: Request, rt: RuntimeDep, user: User) -> HTMLResponse:
    camps = dashboard.campaigns(rt)
    params = dict(request.query_params)
    f, form = dashboard.call_filter(params, [c.id for c in camps])
    cursor = params.get("cursor") or None
    page = review.list_call_log(rt, user.identity, f, limit=dashboard.PAGE_SIZE, cursor=cursor,
                                via="ui: call log")
    query = {k: v for k, v in form.values.items() if v}
    return _page(
        request, rt, "calls.html", user, "calls",
        items=page.items, form=form, campaigns=camps, names={c.id: c.name for c in camps},
        results=dashboard.RESULTS, cursor=cursor or "",
        next_url=("/ui/calls?" + urlencode({**query, "cursor": page.next_cursor}))
        if page.next_cursor else None,
        csv_url="/ui/calls.csv" + (f"?{urlencode(query)}" if query else ""),
    )


@router.get("/calls.csv", name="ui_calls_csv")
def calls_csv(request: Request, rt: RuntimeDep, user: User) -> StreamingResponse:
    f, _form = dashboard.call_filter(
        dict(request.query_params), [c.id for c in dashboard.campaigns(rt)]
    )
    chunks = exports.export_call_log_csv(rt, user.identity, f, via="ui: call log CSV")
    return _csv(chunks, "call-log.csv")


# --- a number's story ---------------------------------------------------------------------------


@router.get("/numbers", name="ui_numbers")
def numbers(request: Request, rt: RuntimeDep, user: User) -> HTMLResponse:
    return _page(request, rt, "numbers.html", user, "numbers", error=None)


@router.post("/numbers/lookup", name="ui_number_lookup")
def number_lookup(
    request: Request,
    rt: RuntimeDep,
    user: FormUser,
    phone: Annotated[str, Form(max_length=40)] = "",
    refusal_id: Annotated[int | None, Form(ge=1, le=2**63 - 1)] = None,
    attempt_id: Annotated[str, Form(max_length=36)] = "",
) -> Response:
    """The story of a typed number, or of a refusal's or an attempt's number, rendered as the
    answer to this POST: the number never appears in a URL (no redirect to a page named by
    it, no query string), so it reaches no browser history, proxy log or Referer. The view
    is audited by the story itself, naming the number by pseudonym."""
    if refusal_id is not None or attempt_id:
        found = dashboard.phone_of(rt, refusal_id=refusal_id, attempt_id=attempt_id or None)
        if found is None:
            return _page(request, rt, "numbers.html", user, "numbers",
                         error="That row has no phone number.", status_code=404)
        story = dashboard.number_story(rt, user.identity, found,
                                       via="ui: a number's story (from a log row)")
        return _page(request, rt, "number.html", user, "numbers", story=story)
    try:
        e164 = dashboard.check_phone(rt, phone)
    except DomainError as exc:
        return _page(request, rt, "numbers.html", user, "numbers", error=exc.message,
                     status_code=400)
    story = dashboard.number_story(rt, user.identity, e164, via="ui: number look-up")
    return _page(request, rt, "number.html", user, "numbers", story=story)


# --- texts: STOPs and confirmations per day, texts held for review, templates ---------------


@router.get("/texts", name="ui_texts")
def texts_page(request: Request, rt: RuntimeDep, user: User) -> HTMLResponse:
    return _page(request, rt, "texts.html", user, "texts",
                 tv=texts_view.texts_view(rt, user.identity), can_decide=True)


@router.post("/texts/review", name="ui_texts_review")
def texts_review(
    request: Request,
    rt: RuntimeDep,
    user: FormUser,
    inbound_id: Annotated[str, Form(min_length=1, max_length=36)],
    decision: Annotated[str, Form(pattern="^(revoke|release)$")],
) -> Response:
    """A compliance or admin user's decision on a held text (texts.service.decide_review)."""
    try:
        text_service.decide_review(rt, user.identity, inbound_id, decision)
    except DomainError as exc:
        return _error(request, 404 if exc.kind == "not_found" else 409, exc.message)
    return RedirectResponse("/ui/texts", status_code=303)


# --- the auditor's pages: the audit log, the access report ----------------------------------


AUDIT_PARAMS = ("actor", "kind", "since", "until")


def _audit_filter(params: dict[str, str]) -> tuple[audit_view.LogFilter, dashboard.FormFilter]:
    values = {n: str(params.get(n, "") or "").strip()[:128] for n in AUDIT_PARAMS}
    errors: list[str] = []
    since, until = dashboard.day_range(values, errors)
    f = audit_view.LogFilter(actor=values["actor"] or None, kind=values["kind"] or None,
                             since=since, until=until)
    return f, dashboard.FormFilter(values, errors)


@router.get("/audit", name="ui_audit")
def audit_log_page(request: Request, rt: RuntimeDep, user: User) -> HTMLResponse:
    """The audit log, newest first, filtered by actor, kind and UTC days; with its state."""
    params = dict(request.query_params)
    f, form = _audit_filter(params)
    before_text = params.get("before", "")
    before = int(before_text) if before_text.isdigit() else None
    items, nxt = audit_view.browse(rt, f, before, dashboard.PAGE_SIZE)
    query = {k: v for k, v in form.values.items() if v}
    return _page(
        request, rt, "audit.html", user, "audit", items=items, form=form,
        kinds=audit_view.KNOWN_KINDS, status=audit_view.status(rt),
        payload_text=audit_view.payload_text, before=before,
        next_url=("/ui/audit?" + urlencode({**query, "before": nxt})) if nxt is not None
        else None,
        csv_url="/ui/audit.csv" + (f"?{urlencode(query)}" if query else ""),
    )


@router.get("/audit.csv", name="ui_audit_csv")
def audit_log_csv(request: Request, rt: RuntimeDep, user: User) -> StreamingResponse:
    f, _form = _audit_filter(dict(request.query_params))
    rows = audit_view.export_rows(rt, f)
    return _csv(exports.csv_chunks(audit_view.AUDIT_CSV_COLUMNS, rows), "audit-log.csv")


@router.get("/access", name="ui_access")
def access_form(request: Request, rt: RuntimeDep, user: User) -> HTMLResponse:
    return _page(request, rt, "access.html", user, "access", report=None, error=None,
                 values={"by": "phone", "since": "", "until": ""})


@router.post("/access", name="ui_access_report")
def access_report_page(
    request: Request,
    rt: RuntimeDep,
    user: FormUser,
    by: Annotated[str, Form(max_length=16)] = "phone",
    value: Annotated[str, Form(max_length=128)] = "",
    since: Annotated[str, Form(max_length=16)] = "",
    until: Annotated[str, Form(max_length=16)] = "",
) -> HTMLResponse:
    """The access report for a number or a patient reference, posted (never in a URL) and
    rendered as the answer; the report's use is itself audited."""
    values = {"by": by if by in ("phone", "patient_ref") else "phone", "since": since,
              "until": until}
    errors: list[str] = []
    since_at, until_at = dashboard.day_range(dict(values), errors)
    if not value.strip():
        errors.append("Enter a phone number or a patient reference.")
    if errors:
        return _page(request, rt, "access.html", user, "access", report=None,
                     error=" ".join(errors), values=values, status_code=400)
    by_phone = values["by"] == "phone"
    report = access.access_report(
        rt, user.identity, phone=value.strip() if by_phone else None,
        patient_ref=None if by_phone else value.strip(), since=since_at, until=until_at,
        limit=access.MAX_LIMIT, via="ui: access report")
    return _page(request, rt, "access.html", user, "access", report=report, error=None,
                 values=values)
