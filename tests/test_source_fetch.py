"""The real Fetcher (httpx + tenacity) against a real HTTP server on 127.0.0.1, and
`digest fetch` through the CLI. Every fault ends in the right result or a FetchError
that names the URL; the server's log shows how many tries were made."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from digest.errors import FetchError
from digest.store import Store
from tests.support.cli import process_env, run_digest
from tests.support.hfserver import (
    HFServer,
    Reply,
    SleepLog,
    fast_fetcher,
)
from tests.support.paths import PAGE_2024_08_01

PAGE = PAGE_2024_08_01.read_bytes()


def test_redirect_followed_and_user_agent_names_us(hf_server: HFServer) -> None:
    hf_server.route("/papers", Reply.redirect("/papers/date/2024-08-01"))
    hf_server.route("/papers/date/2024-08-01", Reply(PAGE))
    fetcher = fast_fetcher()
    body, final = fetcher.get(hf_server.url("/papers"))
    assert body == PAGE
    assert final == hf_server.url("/papers/date/2024-08-01")
    paths = [r.path for r in hf_server.requests]
    assert paths == ["/papers", "/papers/date/2024-08-01"]
    assert all("papers-digest" in r.headers["user-agent"] for r in hf_server.requests)


def test_slow_body_times_out_after_retries_naming_the_url(hf_server: HFServer) -> None:
    hf_server.route("/papers", Reply(PAGE, stall=5.0, stall_after=1000))
    sleep = SleepLog()
    fetcher = fast_fetcher(retries=1, timeout=0.3, sleep=sleep)
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetcher.get(hf_server.url("/papers"))
    assert hf_server.url("/papers") in str(err.value)
    assert "timed out after 2 attempts" in str(err.value)
    assert len(hf_server.requests) == 2
    assert len(sleep.waits) == 1
    assert time.monotonic() - started < 3.0  # the read timeout cut it, not the stall


def test_503_then_200_succeeds_after_one_small_wait(hf_server: HFServer) -> None:
    hf_server.route("/papers", Reply(b"busy", status=503), Reply(PAGE))
    sleep = SleepLog()
    body, _ = fast_fetcher(retries=3, backoff=0.01, sleep=sleep).get(hf_server.url("/papers"))
    assert body == PAGE
    assert len(hf_server.requests) == 2
    # One retry; its wait follows our backoff (jitter included), not tenacity's default 1 s.
    assert len(sleep.waits) == 1
    assert 0.01 <= sleep.waits[0] <= 0.02


def test_500_for_ever_gives_up_with_growing_waits(hf_server: HFServer) -> None:
    hf_server.route("/papers", Reply(b"oops", status=500))
    sleep = SleepLog()
    with pytest.raises(FetchError) as err:
        fast_fetcher(retries=3, backoff=0.01, sleep=sleep).get(hf_server.url("/papers"))
    assert err.value.status == 500
    assert "HTTP 500 after 4 attempts" in str(err.value)
    assert len(hf_server.requests) == 4
    assert len(sleep.waits) == 3
    assert sleep.waits[2] >= 0.04  # 0.01 * 2**2: exponential


def test_429_retry_after_is_waited_then_succeeds(hf_server: HFServer) -> None:
    hf_server.route(
        "/api/daily_papers",
        Reply(b"slow down", status=429, headers={"Retry-After": "1"}),
        Reply.json([]),
    )
    sleep = SleepLog(real=True)
    body, _ = fast_fetcher(sleep=sleep).get(hf_server.url("/api/daily_papers"), {"limit": 100})
    assert body == b"[]"
    assert sleep.waits == [1.0]
    first, second = hf_server.requests
    assert second.at - first.at >= 0.95  # the server saw us wait
    assert second.query == {"limit": "100"}


def test_retry_after_too_long_means_down_not_a_five_minute_nap(hf_server: HFServer) -> None:
    hf_server.route("/papers", Reply(status=503, headers={"Retry-After": "3600"}))
    sleep = SleepLog()
    with pytest.raises(FetchError) as err:
        fast_fetcher(sleep=sleep).get(hf_server.url("/papers"))
    assert "Retry-After" in str(err.value) and hf_server.url("/papers") in str(err.value)
    assert len(hf_server.requests) == 1
    assert sleep.waits == []


def test_404_is_not_retried(hf_server: HFServer) -> None:
    sleep = SleepLog()
    url = hf_server.url("/papers/date/2024-08-01")
    with pytest.raises(FetchError) as err:
        fast_fetcher(retries=3, sleep=sleep).get(url)
    assert err.value.status == 404
    assert "HTTP 404" in str(err.value) and url in str(err.value)
    assert len(hf_server.requests) == 1
    assert sleep.waits == []


@pytest.mark.parametrize(
    "url,words",
    [
        ("huggingface.co/papers", "not a URL we can fetch"),
        ("ftp://huggingface.co/papers", "not a URL we can fetch"),
        ("http://[::1/api/daily_papers", "not a valid URL"),
    ],
)
def test_a_url_that_can_never_work_is_not_retried(url: str, words: str) -> None:
    sleep = SleepLog()
    with pytest.raises(FetchError) as err:
        fast_fetcher(retries=3, sleep=sleep).get(url, params={"date": "2024-08-01"})
    assert words in str(err.value) and url.split("/")[0] in str(err.value)
    assert sleep.waits == []


def test_body_shorter_than_content_length_is_retried_then_fails(hf_server: HFServer) -> None:
    hf_server.route("/papers", Reply(PAGE[:5000], content_length=len(PAGE)))
    with pytest.raises(FetchError) as err:
        fast_fetcher(retries=2).get(hf_server.url("/papers"))
    assert "network error after 3 attempts" in str(err.value)
    assert "RemoteProtocolError" in str(err.value)
    assert len(hf_server.requests) == 3


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-content-length"])
def test_oversized_body_is_refused_naming_the_limit(hf_server: HFServer, declared: bool) -> None:
    hf_server.route("/papers", Reply(PAGE, content_length=None if declared else -1))
    with pytest.raises(FetchError) as err:
        fast_fetcher(max_bytes=10_000).get(hf_server.url("/papers"))
    assert "10000-byte limit" in str(err.value)
    assert hf_server.url("/papers") in str(err.value)
    assert len(hf_server.requests) == 1  # a size refusal is final


def test_body_just_under_the_limit_is_taken(hf_server: HFServer) -> None:
    hf_server.route("/papers", Reply(PAGE, content_length=-1))
    body, _ = fast_fetcher(max_bytes=len(PAGE)).get(hf_server.url("/papers"))
    assert body == PAGE


def test_redirect_loop_is_a_fetch_error_not_a_crash(hf_server: HFServer) -> None:
    hf_server.route("/a", Reply.redirect("/b"))
    hf_server.route("/b", Reply.redirect("/a"))
    with pytest.raises(FetchError) as err:
        fast_fetcher().get(hf_server.url("/a"))
    assert "TooManyRedirects" in str(err.value)
    assert hf_server.url("/a") in str(err.value)


# -- the CLI -------------------------------------------------------------------------------


def _digest_fetch(server: HFServer, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # retries = 0 keeps the failure case fast: the default backoff waits seconds.
    (tmp_path / "config.toml").write_text("[source]\nretries = 0\n")
    env = process_env(
        DIGEST_DB=str(tmp_path / "cli.db"),
        DIGEST_SOURCE_URL=server.url("/papers"),
        DIGEST_API_URL=server.url("/api/daily_papers"),
    )
    return run_digest(None, "fetch", cwd=tmp_path, env=env)


def test_cli_fetch_prints_one_line_and_exits_0(hf_server: HFServer, tmp_path: Path) -> None:
    hf_server.route("/papers", Reply.redirect("/papers/date/2024-08-01"))
    hf_server.route("/papers/date/2024-08-01", Reply(PAGE))
    done = _digest_fetch(hf_server, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "page" in lines[0] and "for 2024-08-01" in lines[0]
    assert "seen 13, new 13" in lines[0]
    store = Store.open(tmp_path / "cli.db")
    try:
        assert store.count_papers() == 13
    finally:
        store.close()


def test_cli_fetch_against_a_500_server_exits_1_and_says_why(
    hf_server: HFServer, tmp_path: Path
) -> None:
    hf_server.route("/papers", Reply(b"down", status=500))
    done = _digest_fetch(hf_server, tmp_path)
    assert done.returncode == 1
    assert "failed" in done.stderr and "HTTP 500" in done.stderr
    assert hf_server.url("/papers") in done.stderr
    assert "Traceback" not in done.stderr
    store = Store.open(tmp_path / "cli.db")
    try:
        assert store.count_papers() == 0
        run = store.last_run()
        assert run is not None and run["status"] == "failed" and "HTTP 500" in run["reason"]
    finally:
        store.close()


# -- the whole-response deadline and the stop -----------------------------------------------


class DripServer:
    """A real HTTP server on 127.0.0.1 that sends a page one byte every `every` seconds:
    each read gets a byte well inside any read timeout, so only a deadline ends it."""

    def __init__(self, body: bytes, every: float) -> None:
        import http.server
        import threading

        self.stop = threading.Event()
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests += 1
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        if outer.stop.wait(every):
                            return
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client cut us off: what the test wants

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/papers"

    def __enter__(self) -> DripServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("retries", [0, 1])
def test_a_dripped_page_fails_by_the_deadline_naming_the_url(retries: int) -> None:
    """timeout = 1 used to bound each read only: a page dripped over 10 s took 10 s."""
    from digest.source.fetch import Fetcher, make_client

    with DripServer(PAGE[:200], every=0.05) as server:  # 200 bytes: 10 s in all
        sleep = SleepLog()
        fetcher = Fetcher(make_client(1.0, 1.0), retries=retries, backoff=0.01, sleep=sleep)
        started = time.monotonic()
        with pytest.raises(FetchError) as err:
            fetcher.get(server.url())
        took = time.monotonic() - started
    assert server.url() in str(err.value)
    assert "no complete response within 1 s, source.timeout" in str(err.value)
    assert server.requests == retries + 1
    assert (retries + 1) * 1.0 <= took < (retries + 1) * 1.0 + 0.8, took


def test_a_stop_cuts_the_backoff_sleep() -> None:
    """A closed port with 3 retries and a 5 s backoff: the stop ends it at once."""
    import threading

    from digest.source.fetch import Fetcher, make_client
    from digest.stopping import StopSignal
    from tests.support.net import free_port

    stop = StopSignal()
    fetcher = Fetcher(make_client(5.0, 5.0), retries=3, backoff=5.0, stop=stop)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(FetchError, match="stopped: the service is shutting down"):
        fetcher.get(f"http://127.0.0.1:{free_port()}/papers")
    assert time.monotonic() - started < 1.0


def test_a_stop_cuts_a_request_in_flight(hf_server: HFServer) -> None:
    """A server that takes the request and says nothing for a minute."""
    import threading

    from digest.source.fetch import Fetcher, make_client
    from digest.stopping import StopSignal

    hf_server.route("/papers", Reply(PAGE, hold=60.0))
    stop = StopSignal()
    fetcher = Fetcher(make_client(30.0, 30.0), retries=3, stop=stop)
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(FetchError, match="stopped") as err:
        fetcher.get(hf_server.url("/papers"))
    assert time.monotonic() - started < 1.2
    assert hf_server.url("/papers") in str(err.value)
    assert len(hf_server.requests) == 1  # not retried
