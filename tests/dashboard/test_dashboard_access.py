"""Without the token, the dashboard shows nothing: every page and download is
refused, in a browser and to a plain HTTP client, and the intake routes are
unchanged. With no DASHBOARD_TOKEN the dashboard is off."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr
from starlette.routing import Route

from tests.dashboard.conftest import TOKEN
from tests.dashboard.hostile import HOSTILE_ID, PLAIN_ID, load_hostile_archive
from worker.config import load_settings
from worker.dashboard.app import Dashboard
from worker.dashboard.auth import COOKIE, SESSION_SECONDS, Sessions, local_target

# One request per guarded route of the dashboard (a test below checks that
# none is missing), each of which shows archived data to a logged-in person.
PAGES = {
    "health": "/",
    "visibility": "/visibility?by=day",
    "report": "/visibility/share-of-voice?by=provider",
    "report_csv": "/visibility/citations.csv",
    "answers": "/answers?" + urlencode({"brand": "Acme"}),
    "answers_csv": "/answers.csv?" + urlencode({"domain": "g.example"}),
    "answer": f"/answers/mentionsapi/{HOSTILE_ID}",
    "answer_raw": f"/answers/mentionsapi/{PLAIN_ID}/payload.json",
}
# Text any of those pages would show: none of it may leak to a stranger.
DATA = ("Acme", "Globex", HOSTILE_ID, PLAIN_ID, "g.example", "archived")


def guarded_route_names() -> set[str]:
    settings = load_settings().model_copy(update={"dashboard_token": SecretStr(TOKEN)})
    routes = Dashboard(settings, read_session=lambda: None).routes()  # type: ignore[arg-type,return-value]
    public = {"login", "login_submit", "logout", "dashboard_static"}
    return {r.name for r in routes if isinstance(r, Route) and r.name not in public}


def test_every_guarded_route_is_checked_below() -> None:
    assert guarded_route_names() == set(PAGES)


def assert_refused(response: httpx.Response, where: object) -> None:
    assert response.status_code in (303, 401, 403), (where, response.status_code)
    if response.status_code == 303:
        assert response.headers["location"].startswith("/login?next="), where
    for text in DATA:
        assert text not in response.text, (where, text)


def test_without_a_session_every_page_and_download_is_refused(
    page: Any, serve: Any, configure: Any
) -> None:
    load_hostile_archive()
    with serve(DASHBOARD_TOKEN=TOKEN) as base, httpx.Client(base_url=base, trust_env=False) as http:
        wrong = Sessions(SecretStr("another-token"))
        right = Sessions(SecretStr(TOKEN))
        cookies: list[str | None] = [
            None,
            "",
            "garbage",
            f"{int(time.time())}.{'0' * 64}",  # a forged signature
            wrong.issue(),  # signed for another token
            right.issue(now=time.time() - SESSION_SECONDS - 60),  # expired
            right.issue(now=time.time() + 3600),  # issued in the future
        ]
        for name, path in PAGES.items():
            for cookie in cookies:
                for accept in ("text/html", "*/*"):
                    headers = {"accept": accept}
                    if cookie is not None:
                        headers["cookie"] = f"{COOKIE}={cookie}"
                    assert_refused(http.get(path, headers=headers), (name, cookie, accept))

        # A wrong token gets the form again, and no cookie.
        refused = http.post(
            "/login", data={"token": "not-it", "next": "/"}, headers={"accept": "text/html"}
        )
        assert refused.status_code == 401
        assert COOKIE not in refused.headers.get("set-cookie", "")
        assert 'type="password"' in refused.text
        # Bytes that are not ASCII, or not UTF-8, are simply a wrong token.
        odd = http.post("/login", content=b"token=%FF%FE%00\xff&next=/")
        assert odd.status_code == 401

        # The right token: an HttpOnly, SameSite cookie, not Secure over plain HTTP,
        # and a redirect that stays on this site whatever `next` says.
        ok = http.post("/login", data={"token": TOKEN, "next": "//evil.example/x"})
        assert ok.status_code == 303
        assert ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
        session = cookie.split(";")[0].split("=", 1)[1]
        # Behind a proxy that terminated TLS (uvicorn trusts X-Forwarded-Proto from
        # loopback), the cookie is Secure.
        https = http.post("/login", data={"token": TOKEN}, headers={"x-forwarded-proto": "https"})
        assert https.status_code == 303
        assert "Secure" in https.headers["set-cookie"]
        for name, path in PAGES.items():
            shown = http.get(path, headers={"cookie": f"{COOKIE}={session}"})
            assert shown.status_code == 200, name
            assert shown.headers["cache-control"] == "no-store"
        assert "script-src" not in shown.headers["content-security-policy"]
        # Ids that name nothing are 404s, whatever they hold; bad filters are 400s.
        odd_requests = {
            "/answers/mentionlab/not-a-uuid": 404,
            "/answers/mentionlab/not-a-uuid/payload.json": 404,
            "/answers/mentionlab/00000000-0000-0000-0000-000000000000": 404,
            "/answers/elsewhere/x/payload.json": 404,
            "/answers/mentionsapi/ask_unknown": 404,
            "/visibility?since=yesterday": 400,
            "/visibility?by=colour": 400,
            "/visibility/colour": 400,
            "/visibility/colour.csv": 400,
            "/answers": 400,
        }
        for path, status in odd_requests.items():
            answered = http.get(path, headers={"cookie": f"{COOKIE}={session}"})
            assert answered.status_code == status, path

        # Unchanged: the process's health, and the intake routes (off without their secrets).
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.post("/v1/track", json={}).status_code == 503
        assert http.post("/webhooks/mentionsapi", content=b"{}").status_code == 503

        # In a browser: every page lands on the login form and shows no data.
        for name, path in PAGES.items():
            if name in ("report_csv", "answers_csv", "answer_raw"):
                response = page.request.get(f"{base}{path}")
                assert response.status == 401, name
                assert HOSTILE_ID not in response.text()
                continue
            page.goto(f"{base}{path}")
            assert "/login" in page.url, name
            # (The form's hidden `next` field holds the address asked for, not data.)
            shown = page.inner_text("body")
            for text in DATA:
                assert text not in shown, (name, text)
            assert page.locator("table").count() == 0
        # ... and after logging in, the page asked for first.
        page.goto(f"{base}{PAGES['answer']}")
        page.fill("input[name=token]", TOKEN)
        page.click("form button[type=submit]")
        page.wait_for_load_state()
        assert page.url == f"{base}{PAGES['answer']}"


def test_without_dashboard_token_the_dashboard_is_off(serve: Any) -> None:
    with serve() as base, httpx.Client(base_url=base, trust_env=False) as http:
        off = http.get("/")
        assert off.status_code == 404
        assert "DASHBOARD_TOKEN" in off.text
        for path in ("/visibility", "/login", "/answers?brand=Acme"):
            assert http.get(path).status_code == 404, path
        assert http.post("/login", data={"token": ""}).status_code in (404, 405)
        assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/visibility?by=day", "/visibility?by=day"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("visibility", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
    ],
)
def test_login_only_redirects_within_the_site(target: str | None, expected: str) -> None:
    assert local_target(target, "/") == expected


def test_sessions_expire_and_belong_to_their_token() -> None:
    sessions = Sessions(SecretStr(TOKEN))
    now = 2_000_000_000.0
    cookie = sessions.issue(now=now)
    assert sessions.valid(cookie, now=now)
    assert sessions.valid(cookie, now=now + SESSION_SECONDS)
    assert not sessions.valid(cookie, now=now + SESSION_SECONDS + 1)
    assert not Sessions(SecretStr(TOKEN + "x")).valid(cookie, now=now)
    issued, mac = cookie.split(".")
    assert not sessions.valid(f"{int(issued) + 1}.{mac}", now=now)
    assert not sessions.valid(f"{issued}.{mac[:-1]}", now=now)
    assert sessions.token_matches(TOKEN.encode())
    assert not sessions.token_matches(b"")
    assert not sessions.token_matches("é".encode())
