"""The read-only JSON API: /api/papers (newest first, a cursor to page on), /api/papers/<id>,
/api/topics, and its OpenAPI description at /api/openapi.json.

Cached like the feeds: a strong ETag from the body (the same in every process), 304 for an
If-None-Match that names it, `Cache-Control: no-cache` so clients revalidate. Bodies are
built once per version of the store (web.browse.PageCache). Errors are JSON too:
{"error": "..."} naming the parameter that is wrong, with 400 or 404; never a 500 for
what a client sent.

Paging: `cursor` is the `next_cursor` of the previous answer (a position in the archive,
newest first). With `topic`, at most SCAN papers are looked at per request, so a rare
topic's page may hold fewer than `limit` papers and still a `next_cursor`: follow it
until it is null.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.models import StoredPaper, TopicMatch
from digest.store import Store, browse
from digest.store.fts import BadQuery, parse_query
from digest.web.browse import Browse, http_url

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
SCAN = 2000  # papers looked at per request when filtering by topic
JSON_TYPE = "application/json"


class BadParameter(ValueError):
    """A query parameter the API cannot use; the message names it."""


def paper_json(sp: StoredPaper, topics: list[TopicMatch]) -> dict[str, Any]:
    """One paper as the API gives it."""
    p = sp.paper
    links = {"huggingface": p.hf_url, "arxiv": p.arxiv_url, "pdf": p.pdf_url}
    if http_url(p.github_repo):
        links["github"] = http_url(p.github_repo) or ""
    if http_url(p.project_page):
        links["project_page"] = http_url(p.project_page) or ""
    return {
        "id": p.id,
        "title": p.title,
        "abstract": p.abstract,
        "authors": list(p.authors),
        "organization": p.organization,
        "published_at": p.published_at.isoformat() if p.published_at else None,
        "daily_date": p.daily_date.isoformat() if p.daily_date else None,
        "first_seen": sp.first_seen.isoformat(),
        "upvotes": p.upvotes,
        "comments": p.comments,
        "github_stars": p.github_stars,
        "ai_summary": p.ai_summary,
        "ai_keywords": list(p.ai_keywords),
        "withdrawn": p.withdrawn,
        "topics": [m.topic for m in topics],
        "links": links,
    }


def _day(params: dict[str, str], name: str) -> date | None:
    value = params.get(name)
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadParameter(f"{name}={value[:40]!r} is not a day (YYYY-MM-DD)") from None


def _int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise BadParameter(f"{name}={value[:40]!r} is not a whole number")
    number = int(value)
    if not low <= number <= high:
        raise BadParameter(f"{name}={number} is outside {low}-{high}")
    return number


class Api:
    """The API's handlers, over the reading pages' config, matcher and cache."""

    def __init__(self, browse: Browse) -> None:
        self.browse = browse
        self.config = browse.config

    def answer(self, request: Request, status: int, body: str) -> Response:
        data = body.encode("utf-8")
        etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
        headers = {"etag": etag, "cache-control": "no-cache"}
        if status == 200:
            asked = request.headers.get("if-none-match", "")
            tags = {t.strip().removeprefix("W/") for t in asked.split(",")}
            if asked.strip() == "*" or etag in tags:
                return Response(status_code=304, headers=headers)
        return Response(data, status_code=status, media_type=JSON_TYPE, headers=headers)

    def error(self, status: int, message: str) -> Response:
        return Response(
            json.dumps({"error": message}, ensure_ascii=False),
            status_code=status,
            media_type=JSON_TYPE,
            headers={"cache-control": "no-store"},
        )

    def papers_body(self, params: dict[str, str]) -> str:
        """The /api/papers answer for `params` (raises BadParameter)."""
        since, until = _day(params, "since"), _day(params, "until")
        limit = _int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        cursor = _int(params, "cursor", 0, 1, 2**62) if params.get("cursor") else None
        topic = params.get("topic", "")
        if topic and topic not in self.browse.topics:
            raise BadParameter(f"topic={topic[:40]!r}: no such topic (see /api/topics)")
        match = None
        if params.get("q"):
            try:
                match = parse_query(params["q"]).match
            except BadQuery as e:
                raise BadParameter(f"q: {e}") from None

        def build(store: Store) -> str:
            out: list[dict[str, Any]] = []
            before, scanned, exhausted = cursor, 0, False
            while len(out) < limit and scanned < SCAN and not exhausted:
                want = limit - len(out) if not topic else min(SCAN - scanned, max(4 * limit, 100))
                rows = browse.papers_before(
                    store, before=before, since=since, until=until, match=match, limit=want
                )
                scanned += len(rows)
                exhausted = len(rows) < want
                of = self.browse.topic_matches(store, [sp for _, sp in rows])
                for i, (position, sp) in enumerate(rows):
                    before = position  # the last paper looked at: the next page starts below
                    matches = list(of[sp.paper.id])
                    if topic and topic not in {m.topic for m in matches}:
                        continue
                    out.append(paper_json(sp, matches))
                    if len(out) == limit:
                        exhausted = exhausted and i == len(rows) - 1
                        break
            next_cursor = None if exhausted or before is None else str(before)
            return json.dumps({"papers": out, "next_cursor": next_cursor}, ensure_ascii=False)

        key = "api/papers?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        return self.browse.part(key, build)

    async def papers(self, request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items()}
        unknown = sorted(set(params) - {"since", "until", "topic", "q", "limit", "cursor"})
        if unknown:
            return self.error(400, f"unknown parameter {unknown[0][:40]!r}")
        try:
            body = await run_in_threadpool(self.papers_body, params)
        except BadParameter as e:
            return self.error(400, str(e))
        return self.answer(request, 200, body)

    async def paper(self, request: Request) -> Response:
        paper_id = request.path_params["id"]

        def build(store: Store) -> str:
            sp = browse.paper(store, paper_id)
            if sp is None:
                return ""
            matches = list(self.browse.topic_matches(store, [sp])[sp.paper.id])
            return json.dumps(paper_json(sp, matches), ensure_ascii=False)

        body = await run_in_threadpool(self.browse.part, f"api/paper/{paper_id}", build)
        if not body:
            return self.error(404, f"no paper {paper_id[:40]!r} in the archive")
        return self.answer(request, 200, body)

    async def topics(self, request: Request) -> Response:
        base = self.config.feeds.base_url.rstrip("/")
        body = [
            {
                "name": t.name,
                "title": t.display_title,
                "keywords": t.keywords,
                "phrases": t.phrases,
                "exclude": t.exclude,
                "authors": t.authors,
                "organizations": t.organizations,
                "fields": t.fields,
                "has_code": t.has_code,
                "min_upvotes": t.min_upvotes,
                "min_stars": t.min_stars,
                "page": f"{base}/topics/{t.name}",
                "feeds": {
                    "rss": f"{base}/feeds/{t.name}.xml",
                    "atom": f"{base}/feeds/{t.name}.atom",
                    "json": f"{base}/feeds/{t.name}.json",
                },
            }
            for t in self.config.topics
        ]
        return self.answer(request, 200, json.dumps({"topics": body}, ensure_ascii=False))

    async def openapi(self, request: Request) -> Response:
        names = [t.name for t in self.config.topics]
        return self.answer(request, 200, json.dumps(openapi(self.config.feeds.title, names)))

    def routes(self, middleware: list[Middleware] | tuple[Middleware, ...] = ()) -> list[Route]:
        get = ["GET", "HEAD"]
        return [
            Route("/api/papers", self.papers, methods=get, middleware=middleware),
            Route("/api/papers/{id}", self.paper, methods=get, middleware=middleware),
            Route("/api/topics", self.topics, methods=get, middleware=middleware),
            Route("/api/openapi.json", self.openapi, methods=get, middleware=middleware),
        ]


def openapi(title: str, topics: list[str]) -> dict[str, Any]:
    """The OpenAPI 3.0 description of the API (what /api/openapi.json serves).

    Every request it calls valid is answered 2xx / 304 / 404 (schemathesis checks it):
    `topic` is one of the configured names, `cursor` a position, and `q` is described as
    plain words (the API takes more: `prefix*` and "phrases", as the search box does).
    """
    nullable_str = {"type": "string", "nullable": True}
    paper = {
        "type": "object",
        "required": ["id", "title", "authors", "upvotes", "topics", "links", "first_seen"],
        "properties": {
            "id": {"type": "string", "description": "arXiv id"},
            "title": {"type": "string"},
            "abstract": {"type": "string"},
            "authors": {"type": "array", "items": {"type": "string"}},
            "organization": nullable_str,
            "published_at": {"type": "string", "format": "date-time", "nullable": True},
            "daily_date": {"type": "string", "format": "date", "nullable": True},
            "first_seen": {"type": "string", "format": "date-time"},
            "upvotes": {"type": "integer"},
            "comments": {"type": "integer"},
            "github_stars": {"type": "integer", "nullable": True},
            "ai_summary": nullable_str,
            "ai_keywords": {"type": "array", "items": {"type": "string"}},
            "withdrawn": {"type": "boolean"},
            "topics": {"type": "array", "items": {"type": "string"}},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    error = {
        "description": "A parameter is wrong; the message names it.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                }
            }
        },
    }
    not_modified = {"description": "Not modified (If-None-Match named the current ETag)."}

    def param(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": text,
        }

    def ok(schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "description": "OK",
            "headers": {"ETag": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": schema}},
        }

    return {
        "openapi": "3.0.3",
        "info": {"title": f"{title}: papers API", "version": "1"},
        "paths": {
            "/api/papers": {
                "get": {
                    "summary": "Papers, newest first",
                    "parameters": [
                        param("since", {"type": "string", "format": "date"}, "first list day"),
                        param("until", {"type": "string", "format": "date"}, "last list day"),
                        param("topic", {"type": "string", "enum": topics or [""]}, "a topic name"),
                        param(
                            "q",
                            {
                                "type": "string",
                                "maxLength": 300,
                                "pattern": "^[0-9A-Za-z]+( [0-9A-Za-z]+){0,11}$",
                            },
                            "full-text search over title, abstract, authors and AI keywords: "
                            'up to 12 words, all of which must match; also `agent*` and "a phrase"',
                        ),
                        param(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                            f"papers per answer (default {DEFAULT_LIMIT})",
                        ),
                        param(
                            "cursor",
                            {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
                            "next_cursor of the previous answer",
                        ),
                    ],
                    "responses": {
                        "200": ok(
                            {
                                "type": "object",
                                "required": ["papers", "next_cursor"],
                                "properties": {
                                    "papers": {"type": "array", "items": paper},
                                    "next_cursor": nullable_str,
                                },
                            }
                        ),
                        "304": not_modified,
                        "400": error,
                    },
                }
            },
            "/api/papers/{id}": {
                "get": {
                    "summary": "One paper",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": ok(paper),
                        "304": not_modified,
                        "404": error | {"description": "No such paper."},
                    },
                }
            },
            "/api/topics": {
                "get": {
                    "summary": "The configured topics, their feeds and pages",
                    "responses": {
                        "200": ok(
                            {
                                "type": "object",
                                "required": ["topics"],
                                "properties": {
                                    "topics": {"type": "array", "items": {"type": "object"}}
                                },
                            }
                        ),
                        "304": not_modified,
                    },
                }
            },
        },
    }
