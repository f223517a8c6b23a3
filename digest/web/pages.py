"""The web front's pages: landing with the subscribe form, the subscription steps, the
archive. The rules of each step live in web/subscribe.py; this module is HTTP only.

Database work runs in Starlette's thread pool, one short-lived Store per request (SQLite
connections are cheap, and this keeps the event loop free for feed requests).
Forms are parsed from the urlencoded body with the standard library, capped in size.
Sign-up mails are queued in the database and sent by web.subscribe.Outbox's thread, so
no request waits for the mail server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from digest.config import Config
from digest.errors import SubscriberError
from digest.render.email import DigestRenderer
from digest.render.templates import environment
from digest.store import Store
from digest.store.meta import secret_key
from digest.tokens import PREFERENCES, make_token
from digest.web import subscribe as flow

log = logging.getLogger("digest.web")
CSRF_COOKIE = "digest_csrf"
MAX_FORM = 16 * 1024  # bytes: an address, some checkboxes and keywords
FORMATS = (("xml", "RSS"), ("atom", "Atom"), ("json", "JSON Feed"))
T = TypeVar("T")


class Pages:
    """The landing page, the subscription steps and the archive, as handlers (methods)
    that share one config, one sign-up limiter and one mail queue."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.limiter = flow.SignUpLimiter(config.web.subscribe_per_hour)
        self.outbox = flow.Outbox(config)
        if Path(config.store.database).exists():
            self.outbox.wake()  # mails queued before a restart go out now
        self.secure_cookies = config.feeds.base_url.lower().startswith("https:")
        self.keys: list[bytes] = []
        self.title = config.feeds.title
        self.choices = [(t.name, t.display_title) for t in config.topics]
        self.templates = environment(config.templates.dir)

    def with_store(self, work: Callable[[Store], T]) -> T:
        store = Store.open(self.config.store.database)
        try:
            return work(store)
        finally:
            store.close()

    async def db(self, work: Callable[[Store], T]) -> T:
        return await run_in_threadpool(self.with_store, work)

    async def key(self) -> bytes:
        if not self.keys:  # DIGEST_SECRET_KEY, or the one kept in the database
            self.keys.append(await self.db(lambda s: secret_key(s, self.config.secret_key)))
        return self.keys[0]

    def render(self, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        body = self.templates.get_template(name).render(title=self.title, **context)
        return HTMLResponse(body, status_code=code, headers={"Cache-Control": "no-store"})

    def message(
        self,
        heading: str,
        *lines: str,
        status: int = 200,
        links: Sequence[tuple[str, str]] = (),
        button: dict[str, str] | None = None,
    ) -> HTMLResponse:
        # Every name the template uses is passed (StrictUndefined): a button without a
        # form token of its own has an empty one.
        if button is not None:
            button = {"csrf": ""} | button
        return self.render(
            "web/message.html", status, heading=heading, lines=lines, links=links, button=button
        )

    def bad_link(self) -> HTMLResponse:
        return self.message(
            "This link does not work",
            "It is not a link we sent, it was cut short by the mail program, or it has "
            "expired. Nothing was changed.",
            status=400,
            links=[("/", "Subscribe again")],
        )

    async def form(self, request: Request) -> dict[str, list[str]] | None:
        # Refused before it is read: anyone may post here, and a body is held in memory.
        declared = request.headers.get("content-length", "")
        if declared and (not declared.isdigit() or int(declared) > MAX_FORM):
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:  # chunked, or longer than it said
                return None
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    async def csrf_pair(self, request: Request) -> tuple[str, str]:
        # Only a nonce of the shape we hand out is kept; anything else a client sends is
        # replaced, never signed or echoed into a header.
        cookie = request.cookies.get(CSRF_COOKIE)
        k = await self.key()
        if cookie and flow.NONCE.fullmatch(cookie):
            return cookie, flow.csrf_token(k, cookie)
        return flow.new_csrf(k)

    def set_csrf(self, response: Response, cookie: str) -> Response:
        response.set_cookie(
            CSRF_COOKIE,
            cookie,
            httponly=True,
            samesite="strict",
            path="/",
            secure=self.secure_cookies,
        )
        return response

    async def csrf_checked(self, request: Request, fields: dict[str, list[str]]) -> bool:
        token = (fields.get("csrf") or [""])[0]
        return flow.csrf_ok(await self.key(), request.cookies.get(CSRF_COOKIE), token)

    # -- landing and subscribe -----------------------------------------------------------

    async def landing(self, request: Request) -> Response:
        cookie, token = await self.csrf_pair(request)
        response = self.render(
            "web/index.html",
            topics=[("all", "Every paper"), *self.choices],
            formats=FORMATS,
            choices=self.choices,
            csrf=token,
            can_mail=bool(self.config.smtp.host),
        )
        return self.set_csrf(response, cookie)

    async def subscribe(self, request: Request) -> Response:
        if not self.config.smtp.host:
            return self.message(
                "Email is not available here",
                "This server has no mail server configured, so it cannot send the daily "
                "email. The feeds have every new paper.",
                status=503,
                links=[("/", "Back to the feeds")],
            )
        fields = await self.form(request)
        if fields is None:
            return self.message("That form is too large", status=413)
        if not await self.csrf_checked(request, fields):
            return self.message(
                "Please use the form on our page",
                "The form was sent without the token our page puts in it (or your browser "
                "blocked our cookie). Open the page again and resend it.",
                status=403,
                links=[("/", "Back to the form")],
            )
        client = request.client.host if request.client else "unknown"
        if not self.limiter.allow(client):
            return self.message(
                "Too many requests",
                "Please wait a while before subscribing again.",
                status=429,
            )
        address = (fields.get("email") or [""])[0]
        try:
            choice = flow.check_choice(
                self.config,
                fields.get("topics", []),
                (fields.get("keywords") or [""])[0],
                (fields.get("frequency") or ["daily"])[0],
            )
            mailed = await self.db(
                lambda s: flow.request_subscription(self.config, s, address, choice)
            )
        except SubscriberError as e:
            return self.message("Please check the form", str(e), status=400, links=[("/", "Back")])
        except flow.MailLimitReached as e:
            log.warning("subscribe: %s; refusing sign-ups for now", e)
            return self.message(
                "Too many sign-ups just now",
                "We send only so many confirmation mails an hour. Please try again later.",
                status=429,
            )
        # The mail goes out from the background queue: a slow mail server holds no worker.
        self.outbox.wake()
        # The same answer for a new, a pending and a known address.
        return self.message(
            "Check your inbox",
            f"We sent a mail to {mailed}. Open the link in it to confirm your subscription "
            f"(it works for {self.config.web.confirm_hours} hours).",
            "No mail within a few minutes? Look in the spam folder. (One mail per address "
            f"every {self.config.web.confirm_hours} hours: asking again sends no other.)",
        )

    async def confirm_page(self, request: Request) -> Response:
        # A GET changes nothing: scanners that fetch every link in a mail must not
        # confirm a sign-up on a reader's behalf. The button POSTs to the same URL.
        token = request.path_params["token"]
        address = await self.db(lambda s: flow.confirm_token_address(self.config, s, token))
        if address is None:
            return self.bad_link()
        return self.message(
            "Confirm your subscription",
            f"Start the daily email to {address}?",
            button={"action": f"/confirm/{quote(token, safe='')}", "label": "Confirm"},
        )

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        address = await self.db(lambda s: flow.confirm(self.config, s, token))
        if address is None:
            return self.bad_link()
        manage = (
            f"/preferences/{quote(make_token(await self.key(), address, PREFERENCES), safe='')}"
        )
        return self.message(
            "You are subscribed",
            f"{address} gets the next daily email.",
            links=[(manage, "Change your topics"), ("/", "Home")],
        )

    # -- unsubscribe and preferences -------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        address = await self.db(lambda s: flow.unsubscribe_address(self.config, s, token))
        if address is None:
            return self.bad_link()
        return self.message(
            "Unsubscribe",
            f"Stop the daily email to {address}?",
            button={"action": f"/unsubscribe/{quote(token, safe='')}", "label": "Unsubscribe"},
        )

    async def unsubscribe(self, request: Request) -> Response:
        # Also the RFC 8058 one-click POST a mail program sends (List-Unsubscribe=One-Click):
        # the signed token in the URL is the authority, no cookie or form token exists.
        token = request.path_params["token"]
        address = await self.db(lambda s: flow.unsubscribe(self.config, s, token))
        if address is None:
            return self.bad_link()
        return self.message(
            "You are unsubscribed",
            f"{address} gets no more daily emails.",
            links=[("/#subscribe", "Changed your mind? Subscribe again")],
        )

    async def preferences(self, request: Request) -> Response:
        token = request.path_params["token"]
        error = ""
        if request.method == "POST":
            fields = await self.form(request)
            if fields is None or not await self.csrf_checked(request, fields):
                return self.message("Please use the form on our page", status=403)
            try:
                choice = flow.check_choice(
                    self.config,
                    fields.get("topics", []),
                    (fields.get("keywords") or [""])[0],
                    (fields.get("frequency") or ["daily"])[0],
                )
            except SubscriberError as e:
                error = str(e)
            else:
                try:
                    saved = await self.db(
                        lambda s: flow.save_preferences(self.config, s, token, choice)
                    )
                except flow.NotSubscribed as e:
                    return self.message(
                        "You are not subscribed",
                        f"{e}, so there is nothing to change. To get the daily email again, "
                        "subscribe on the form and confirm the mail we send.",
                        status=409,
                        links=[("/#subscribe", "Subscribe")],
                    )
                if saved is None:
                    return self.bad_link()
                return self.message(
                    "Saved",
                    f"{saved} follows: "
                    + (", ".join(choice.topics) or ("" if choice.keywords else "every paper"))
                    + (
                        f" {'and ' if choice.topics else ''}keywords {choice.keywords}"
                        if choice.keywords
                        else ""
                    )
                    + f", {choice.frequency}.",
                    links=[(f"/preferences/{quote(token, safe='')}", "Change again")],
                )
        prefs = await self.db(lambda s: flow.preferences(self.config, s, token))
        if prefs is None:
            return self.bad_link()
        cookie, csrf = await self.csrf_pair(request)
        leave = quote(make_token(await self.key(), prefs.address), safe="")
        response = self.render(
            "web/preferences.html",
            400 if error else 200,
            address=prefs.address,
            status=prefs.status,
            choices=self.choices,
            chosen=set(prefs.topics),
            keywords=prefs.keywords,
            frequency=prefs.frequency,
            csrf=csrf,
            error=error,
            action=f"/preferences/{quote(token, safe='')}",
            # Its own kind of token: a preferences token does not unsubscribe.
            unsubscribe=f"/unsubscribe/{leave}",
        )
        return self.set_csrf(response, cookie)

    # -- feeds index -------------------------------------------------------------------

    async def feeds_index(self, request: Request) -> Response:
        # Every digest's footer links here: the list of feeds, as on the landing page.
        return self.render(
            "web/feeds.html", topics=[("all", "Every paper"), *self.choices], formats=FORMATS
        )

    # -- archive -----------------------------------------------------------------------

    async def archive(self, request: Request) -> Response:
        days = await self.db(lambda s: s.digest_days(limit=366))
        return self.render("web/archive.html", days=days)

    async def archive_day(self, request: Request) -> Response:
        try:
            day = date.fromisoformat(request.path_params["day"])
        except ValueError:
            return self.message("Not found", status=404)

        def build(store: Store) -> str | None:
            editions = dict(store.digest_days(limit=10_000))
            if day not in editions:
                return None
            papers = store.digest_papers(day)
            return DigestRenderer(self.config, papers, day).archive_page()

        page = await self.db(build)
        if page is None:
            return self.message(
                "No digest that day",
                "No email went out on that day.",
                status=404,
                links=[("/archive", "Past digests")],
            )
        return HTMLResponse(page)

    def routes(self, middleware: Sequence[Middleware] = ()) -> list[Route]:
        return [
            Route("/", self.landing, methods=["GET", "HEAD"], middleware=middleware),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/confirm/{token}", self.confirm_page, methods=["GET"]),
            Route("/confirm/{token}", self.confirm, methods=["POST"]),
            Route("/unsubscribe/{token}", self.unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", self.unsubscribe, methods=["POST"]),
            Route("/preferences/{token}", self.preferences, methods=["GET", "POST"]),
            Route("/feeds/", self.feeds_index, methods=["GET", "HEAD"], middleware=middleware),
            Route("/archive", self.archive, methods=["GET", "HEAD"]),
            Route(
                "/archive/{day}", self.archive_day, methods=["GET", "HEAD"], middleware=middleware
            ),
        ]


def page_routes(config: Config, middleware: Sequence[Middleware] = ()) -> list[Route]:
    """Return the routes of the landing page, the subscription steps and the archive."""
    return Pages(config).routes(middleware)
