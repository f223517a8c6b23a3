"""The web front's pages: landing (the latest papers, web/browse.py, above the subscribe
form) and the subscription steps. The rules of each step live in web/subscribe.py; this
module is HTTP only. A form with a mistake is drawn again with what the reader typed and
the problem beside its field.

Database work runs in Starlette's thread pool, one short-lived Store per request (SQLite
connections are cheap, and this keeps the event loop free for feed requests).
Forms are parsed from the urlencoded body with the standard library, capped in size.
Sign-up mails are queued in the database and sent by web.subscribe.Outbox's thread, so
no request waits for the mail server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from digest.addresses import normalize_address
from digest.config import Config
from digest.errors import SubscriberError
from digest.render.templates import environment
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import check_topics
from digest.tokens import PREFERENCES, make_token
from digest.web import feedback
from digest.web import subscribe as flow
from digest.web.browse import Browse

log = logging.getLogger("digest.web")
CSRF_COOKIE = "digest_csrf"
MAX_FORM = 16 * 1024  # bytes: an address, some checkboxes and keywords
FORMATS = (("xml", "RSS"), ("atom", "Atom"), ("json", "JSON Feed"))
T = TypeVar("T")


class Pages:
    """The landing page, the subscription steps and the archive, as handlers (methods)
    that share one config, one sign-up limiter and one mail queue."""

    def __init__(self, config: Config, browse: Browse | None = None) -> None:
        self.config = config
        self.browse = browse or Browse(config)
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

    async def landing(
        self,
        request: Request,
        *,
        form: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        topic, bad = self.browse.topic_param(request)
        if bad is not None:
            return bad
        papers = await run_in_threadpool(self.browse.home_part, topic)
        cookie, token = await self.csrf_pair(request)
        response = self.render(
            "web/index.html",
            status,
            topics=[("all", "Every paper"), *self.choices],
            formats=FORMATS,
            choices=self.choices,
            csrf=token,
            can_mail=bool(self.config.smtp.host),
            papers=Markup(papers),
            form=form or {"email": "", "topics": (), "keywords": "", "frequency": "daily"},
            errors=errors or {},
        )
        return self.set_csrf(response, cookie)

    async def home(self, request: Request) -> Response:
        return await self.landing(request)

    def try_again(self, heading: str, line: str, seconds: float) -> HTMLResponse:
        """A 429 that says when to try again, in words and in Retry-After."""
        wait = max(1, int(seconds + 0.999))
        when = f"{wait} seconds" if wait < 120 else f"{-(-wait // 60)} minutes"
        response = self.message(
            heading, f"{line} Please try again in {when}.", status=429, links=[("/", "Home")]
        )
        response.headers["Retry-After"] = str(wait)
        return response

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
            return self.try_again(
                "Too many requests",
                "This address has sent the form too often this hour.",
                self.limiter.retry_after(client),
            )
        address = (fields.get("email") or [""])[0]
        topics = fields.get("topics", [])
        keywords = (fields.get("keywords") or [""])[0]
        frequency = (fields.get("frequency") or ["daily"])[0]
        # What the reader typed, to draw the form again (escaped by the template).
        typed = {
            "email": address[:254],
            "topics": set(topics),
            "keywords": keywords[:300],
            "frequency": frequency[:10],
        }
        errors: dict[str, str] = {}
        try:
            normalize_address(address)
        except SubscriberError as e:
            errors["email"] = str(e)
        choice = None
        try:
            check_topics(self.config, topics)
        except SubscriberError as e:
            errors["topics"] = str(e)
        else:
            try:
                choice = flow.check_choice(self.config, topics, keywords, frequency)
            except SubscriberError as e:
                errors["keywords"] = str(e)
        if errors or choice is None:
            return await self.landing(request, form=typed, errors=errors, status=400)
        checked = choice
        try:
            mailed = await self.db(
                lambda s: flow.request_subscription(self.config, s, address, checked)
            )
        except SubscriberError as e:
            return await self.landing(request, form=typed, errors={"email": str(e)}, status=400)
        except flow.MailLimitReached as e:
            log.warning("subscribe: %s; refusing sign-ups for now", e)
            return self.try_again(
                "Too many sign-ups just now",
                "We send only so many confirmation mails an hour.",
                e.retry_after,
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
        found = await self.db(lambda s: flow.confirm_link(self.config, s, token))
        if found is None:
            return self.bad_link()
        # What pressing the button applies: what was typed last (the mail names the
        # first choice when the reader signed up again before confirming).
        what = f": {flow.describe_choice(found.choice)}" if found.choice else ""
        return self.message(
            "Confirm your subscription",
            f"Start the email to {found.address}{what}?",
            button={"action": f"/confirm/{quote(token, safe='')}", "label": "Confirm"},
        )

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        done = await self.db(lambda s: flow.confirm(self.config, s, token))
        if done is None:
            return self.bad_link()
        address = done.address
        manage = (
            f"/preferences/{quote(make_token(await self.key(), address, PREFERENCES), safe='')}"
        )
        weekly = done.choice is not None and done.choice.weekly
        return self.message(
            "You are subscribed",
            f"{address} gets the next {'weekly' if weekly else 'daily'} email.",
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
        typed: tuple[set[str], str, str] | None = None  # the reader's input, drawn again
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
                typed = (
                    set(fields.get("topics", [])),
                    (fields.get("keywords") or [""])[0][:300],
                    (fields.get("frequency") or ["daily"])[0][:10],
                )
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
        chosen_papers = await self.db(lambda s: feedback.choices_for(s, prefs.address))
        cookie, csrf = await self.csrf_pair(request)
        leave = quote(make_token(await self.key(), prefs.address), safe="")
        response = self.render(
            "web/preferences.html",
            400 if error else 200,
            address=prefs.address,
            status=prefs.status,
            choices=self.choices,
            chosen=typed[0] if typed else set(prefs.topics),
            keywords=typed[1] if typed else prefs.keywords,
            frequency=typed[2] if typed else prefs.frequency,
            csrf=csrf,
            error=error,
            action=f"/preferences/{quote(token, safe='')}",
            # Its own kind of token: a preferences token does not unsubscribe.
            unsubscribe=f"/unsubscribe/{leave}",
            liked=chosen_papers,
            undo=f"/preferences/{quote(token, safe='')}/undo",
        )
        return self.set_csrf(response, cookie)

    # -- "more / fewer like this" (issue 15) -----------------------------------------------

    async def feedback_page(self, request: Request) -> Response:
        # A GET changes nothing (mail scanners open every link): one button, which POSTs.
        token, kind = request.path_params["token"], request.path_params["kind"]
        found = await self.db(lambda s: feedback.feedback_of(self.config, s, token, kind))
        if found is None:
            return self.bad_link()
        label = "More like this" if found.more else "Fewer like this"
        return self.message(
            label,
            f"Show you {'more' if found.more else 'fewer'} papers like \u201c{found.title}\u201d "
            "in your next emails?",
            button={"action": f"/feedback/{quote(token, safe='')}/{kind}", "label": label},
        )

    async def feedback(self, request: Request) -> Response:
        # The signed token in the URL is the authority, as for the one-click unsubscribe.
        token, kind = request.path_params["token"], request.path_params["kind"]
        found = await self.db(lambda s: feedback.record_feedback(self.config, s, token, kind))
        if found is None:
            return self.bad_link()
        return self.message(
            "Noted",
            f"Your next emails rank papers like \u201c{found.title}\u201d "
            f"{'higher' if found.more else 'lower'}. You can undo this on your preferences "
            "page (the link at the foot of every email).",
            links=[("/", "Home")],
        )

    async def undo_choice(self, request: Request) -> Response:
        token = request.path_params["token"]
        fields = await self.form(request)
        if fields is None or not await self.csrf_checked(request, fields):
            return self.message("Please use the form on our page", status=403)
        address = await self.db(lambda s: flow.preferences_address(self.config, s, token))
        if address is None:
            return self.bad_link()
        paper_id = (fields.get("paper") or [""])[0]
        await self.db(lambda s: feedback.undo_choice(s, address, paper_id))
        return RedirectResponse(f"/preferences/{quote(token, safe='')}", status_code=303)

    # -- feeds index -------------------------------------------------------------------

    async def feeds_index(self, request: Request) -> Response:
        # Every digest's footer links here: the list of feeds, as on the landing page.
        return self.render(
            "web/feeds.html", topics=[("all", "Every paper"), *self.choices], formats=FORMATS
        )

    def routes(self, middleware: Sequence[Middleware] = ()) -> list[Route]:
        return [
            Route("/", self.home, methods=["GET", "HEAD"], middleware=middleware),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/confirm/{token}", self.confirm_page, methods=["GET"]),
            Route("/confirm/{token}", self.confirm, methods=["POST"]),
            Route("/unsubscribe/{token}", self.unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", self.unsubscribe, methods=["POST"]),
            Route("/preferences/{token}", self.preferences, methods=["GET", "POST"]),
            Route("/preferences/{token}/undo", self.undo_choice, methods=["POST"]),
            Route("/feedback/{token}/{kind}", self.feedback_page, methods=["GET"]),
            Route("/feedback/{token}/{kind}", self.feedback, methods=["POST"]),
            Route("/feeds/", self.feeds_index, methods=["GET", "HEAD"], middleware=middleware),
            *self.browse.routes(middleware),
        ]


def page_routes(
    config: Config, middleware: Sequence[Middleware] = (), browse: Browse | None = None
) -> list[Route]:
    """Return the routes of the landing page, the subscription steps and the reading pages
    (topics, archive, search)."""
    return Pages(config, browse).routes(middleware)
