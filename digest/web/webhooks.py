"""POST /webhooks/bounce: bounce reports from a relay that sends them over HTTP.

The relay proves itself with the shared secret (bounces.webhook_secret, from
DIGEST_BOUNCES_WEBHOOK_SECRET or a file), as "Authorization: Bearer <secret>" or as the
password of HTTP basic auth (what SNS and Postmark can put in a webhook URL), compared in
constant time. No secret configured: the route answers 404, as if it were not there.
The body is JSON: {"email": "a@example.org", "type": "permanent", "status": "5.1.1"}, a
list of those, a Postmark bounce or an SES notification (deliver.bounces.parse_webhook).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digest.config import Config
from digest.deliver.bounces import record_webhook
from digest.errors import DigestError
from digest.store import Store

MAX_BODY = 256 * 1024  # a bounce report is small; more is not one


def presented_secret(request: Request) -> str | None:
    """The secret the request carries (bearer token or basic-auth password), else None."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def webhook_routes(config: Config) -> list[Route]:
    """Return the bounce webhook's route."""
    secret = config.bounces.webhook_secret.encode()

    def record(body: object) -> tuple[int, int]:
        store = Store.open(config.store.database)
        try:
            return record_webhook(config, store, body)
        finally:
            store.close()

    async def bounce(request: Request) -> Response:
        if not secret:
            return Response("not found\n", status_code=404, media_type="text/plain")
        given = presented_secret(request)
        # compare_digest on bytes: the time taken says nothing of how much matched.
        if given is None or not hmac.compare_digest(given.encode(), secret):
            return JSONResponse(
                {"error": "missing or wrong secret"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="bounces"'},
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        try:
            counted, left = await run_in_threadpool(record, parsed)
        except DigestError as e:  # a bad address, a shape we do not read
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse({"counted": counted, "ignored": left})

    return [Route("/webhooks/bounce", bounce, methods=["POST"])]
