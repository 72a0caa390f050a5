"""Reader accounts on a Label Studio server: created through the organisation's invite link (sign-up without
the link is disabled), each with its own API token so simulated and real readers post as themselves."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx

logger = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 30.0
HTTP_RETRIES = 2  # connection errors only (httpx transport retries)


# --- reader accounts --------------------------------------------------------------------------------------------


def create_reader(url: str, admin_token: str, email: str, password: str) -> str:
    """Create a reader through the organisation's invite link and return the reader's API token.

    Idempotent: an existing account is logged in with `password` instead. The token is the reader's legacy token when
    the organisation accepts those (our servers do), else a personal access token; Label Studio keeps one per user and
    shows it once, so a repeated call then revokes the old one and returns a new one.
    """
    email = email.strip().lower()  # Label Studio stores e-mail addresses lower-cased
    with _client(url) as session:
        if _log_in(session, email, password):
            return _api_token(session)
    invite_token = _invite_token(url, admin_token)
    with _client(url) as signup:
        _sign_up(signup, invite_token, email, password)
    logger.info("created the Label Studio reader %s", email)
    with _client(url) as session:
        if not _log_in(session, email, password):
            raise RuntimeError(f"signed up {email} but cannot log in with that password")
        return _api_token(session)


def _client(url: str, headers: Mapping[str, str] | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(retries=HTTP_RETRIES)
    return httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S, transport=transport, headers=headers)


def _form_headers(session: httpx.Client, path: str) -> dict[str, str]:
    """Django's CSRF check wants the token (from the cookie) and a same-origin Referer."""
    return {"X-CSRFToken": session.cookies.get("csrftoken", ""), "Referer": f"{session.base_url}{path}"}


def _log_in(session: httpx.Client, email: str, password: str) -> bool:
    session.get("/user/login/").raise_for_status()  # sets the csrftoken cookie
    form = {"email": email, "password": password, "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")}
    response = session.post("/user/login/", data=form, headers=_form_headers(session, "/user/login/"))
    return response.status_code == httpx.codes.FOUND  # a failed login renders the form again (200)


def _sign_up(session: httpx.Client, invite_token: str, email: str, password: str) -> None:
    params = {"token": invite_token}
    session.get("/user/signup/", params=params).raise_for_status()
    form = {"email": email, "password": password, "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")}
    response = session.post("/user/signup/", params=params, data=form, headers=_form_headers(session, "/user/signup/"))
    if response.status_code != httpx.codes.FOUND:
        raise RuntimeError(
            f"Label Studio refused to sign up {email} (HTTP {response.status_code}): the account exists with another "
            "password, the password fails Django's validators (8+ characters, not common, not all digits), "
            "or the invite token is wrong"
        )


def _invite_token(url: str, admin_token: str) -> str:
    with _client(url, headers=_admin_headers(url, admin_token)) as admin:
        response = admin.get("/api/invite")
        response.raise_for_status()
        return str(response.json()["token"])


def _admin_headers(url: str, token: str) -> dict[str, str]:
    """`Token` for a legacy token; a personal access token (a JWT refresh token) is exchanged for a Bearer token."""
    if token.count(".") != 2:
        return {"Authorization": f"Token {token}"}
    with _client(url) as client:
        response = client.post("/api/token/refresh/", json={"refresh": token})
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['access']}"}


def _api_token(session: httpx.Client) -> str:
    """The logged-in user's API token: the legacy one when the organisation accepts those, else a new PAT."""
    settings = session.get("/api/jwt/settings")
    settings.raise_for_status()
    if settings.json().get("legacy_api_tokens_enabled"):
        response = session.get("/api/current-user/token")
        response.raise_for_status()
        return str(response.json()["token"])
    headers = _form_headers(session, "/")
    response = session.post("/api/token/", headers=headers)
    if response.status_code == httpx.codes.CONFLICT:  # one PAT per user, shown only once: revoke it, issue another
        for existing in session.get("/api/token/").json():
            session.post("/api/token/blacklist/", json={"refresh": existing["token"]}, headers=headers)
        response = session.post("/api/token/", headers=headers)
    response.raise_for_status()
    return str(response.json()["token"])
