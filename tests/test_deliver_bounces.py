"""Bounces read from a real IMAP mailbox (Dovecot on 127.0.0.1, started here) holding the
117 real bounce reports of ../shared/fixtures/real/bounces/ and unsubscribe mails: the
readers they name are counted (bouncing), unsubscribed, once; a second poll changes nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import email
import os
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from flufl.bounce import all_failures

from digest.addresses import address_key, normalize_address
from digest.config import BouncesConfig, Config, SmtpConfig, StoreConfig, SubscriberConfig
from digest.deliver.bounces import MailboxError, classify, poll_mailbox
from digest.errors import SubscriberError
from digest.models import SubscriberStatus
from digest.store import Store
from digest.store.meta import secret_key
from digest.store.readers import active_subscribers, list_subscribers, reader_index
from digest.tokens import BOUNCE_TAG, UNSUBSCRIBE_TAG, address_tag
from tests.support import dovecot
from tests.support.net import free_port
from tests.support.paths import ROOT

BOUNCES = ROOT.parent / "shared" / "fixtures" / "real" / "bounces"
DOMAIN = "papers.example.org"
VERP_READER = "verp.reader@example.net"  # named by the envelope sender only
LEAVER = "leaver@example.net"  # mails its unsubscribe address


def expected() -> list[dict[str, str]]:
    with (BOUNCES / "expected.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def addresses(row: dict[str, str]) -> set[str]:
    return {a for a in row["addresses"].split(",") if a}


def valid(address: str) -> str | None:
    """The address as a subscriber would have it, or None (the corpus anonymised some
    addresses into ones no sign-up takes, such as "david...@gmail.com")."""
    try:
        return normalize_address(address)
    except SubscriberError:
        return None


def readers_of_the_corpus() -> tuple[set[str], set[str]]:
    """(addresses the corpus says bounced for good, those only delayed), subscribable."""
    permanent: set[str] = set()
    temporary: set[str] = set()
    for row in expected():
        kind = temporary if row["temporary"] == "True" else permanent
        kind.update(v for a in addresses(row) if (v := valid(a)))
    return permanent, temporary - permanent


def make_config(tmp_path: Path, readers: list[str], port: int = 1, **bounces: object) -> Config:
    return Config(
        store=StoreConfig(database=str(tmp_path / "digest.db")),
        smtp=SmtpConfig(sender=f"digest@{DOMAIN}"),
        bounces=dataclasses.replace(
            BouncesConfig(
                imap_host="127.0.0.1",
                imap_port=port,
                imap_security="none",
                imap_user=f"bounces@{DOMAIN}",
                password="imap-secret",
                timeout=5.0,
            ),
            **bounces,  # type: ignore[arg-type]
        ),
        subscribers=[SubscriberConfig(a) for a in readers],
    )


def test_flufl_bounce_agrees_with_the_corpus_table() -> None:
    """flufl.bounce itself (all its detectors) against expected.tsv (the table of its
    tests, one detector per file): the same addresses, as permanent or temporary, for 114
    of the 116 files; in the other two, which the table lists with no address for their
    detector, the DSN detector reads one from the report."""
    agree, extra = 0, {}
    for row in expected():
        msg = email.message_from_bytes((BOUNCES / row["file"]).read_bytes())
        temporary, permanent = ({a.decode().lower() for a in found} for found in all_failures(msg))
        got = temporary if row["temporary"] == "True" else permanent
        want = {a.lower() for a in addresses(row)}
        if got == want:
            agree += 1
        else:
            assert want < got, row["file"]  # never one missed, only more found
            extra[row["file"]] = got - want
    assert agree == 114 and len(expected()) == 116
    assert extra == {
        "simple_42.txt": {"david...@gmail.com"},
        "groupwise_02.txt": {"userx@example.com"},
    }


def test_flufl_bounce_finds_the_corpus_addresses(tmp_path: Path) -> None:
    """What flufl.bounce finds in the 117 real bounces against expected.tsv (the corpus's
    own per-detector table): the same addresses, permanent or temporary, for 114 of the
    116 listed files; the other two are DSNs whose listed detector finds nothing while
    flufl's DSN detector (which classify runs too) reads the address from the report."""
    permanent, temporary = readers_of_the_corpus()
    config = make_config(tmp_path, sorted(permanent | temporary))
    store = Store.open(config.store.database)
    try:
        readers = reader_index(config, store)
        agree, differ = 0, []
        for row in expected():
            verdicts = classify(readers, (BOUNCES / row["file"]).read_bytes())
            want = {address_key(v) for a in addresses(row) if (v := valid(a))}
            kinds = {"temporary"} if row["temporary"] == "True" else {"bounce"}
            got = {address_key(v.address) for v in verdicts if v.address and v.kind in kinds}
            if row["temporary"] == "True":  # a delay names no reader to count
                ok = all(v.kind in ("temporary", "ignored") for v in verdicts)
            else:
                ok = got == want
            if ok:
                agree += 1
            else:
                differ.append(row["file"])
        listed = {row["file"] for row in expected()}
        for name in sorted(p.name for p in BOUNCES.glob("*.txt")):
            if name not in listed:  # e.g. dumbass_01.txt: nothing to find
                verdicts = classify(readers, (BOUNCES / name).read_bytes())
                assert all(v.kind == "ignored" for v in verdicts), (name, verdicts)
    finally:
        store.close()
    print(f"flufl.bounce: {agree} of {len(expected())} listed real bounces as expected")
    # The two: listed with no address, their addresses are not subscribers here
    # (anonymised into invalid ones or unlisted), so "ignored" is what they give.
    assert agree >= 114, differ
    assert set(differ) <= {"simple_42.txt", "groupwise_02.txt"}, differ


def need_dovecot() -> None:
    """Skip without Dovecot, unless CI (CI_REQUIRE_CONTAINER=1) says it must be there."""
    if not dovecot.available():
        why = "dovecot is not installed (apt install dovecot-imapd)"
        if os.environ.get("CI_REQUIRE_CONTAINER") == "1":
            pytest.fail(f"{why}, and CI_REQUIRE_CONTAINER=1 says these tests must run")
        pytest.skip(why)


@pytest.fixture
def imap() -> Iterator[dovecot.Dovecot]:
    need_dovecot()
    with dovecot.Dovecot(user=f"bounces@{DOMAIN}") as server:
        yield server


def unsubscribe_mail(to: str, sender: str = LEAVER) -> bytes:
    """What a mail program sends for List-Unsubscribe's mailto (mutt does, in
    tests/test_render_mailheaders.py)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "unsubscribe"
    msg.set_content("unsubscribe\n")
    return msg.as_bytes()


def verp_dsn(to: str, name: str = "postfix_01.txt") -> bytes:
    """A real bounce (postfix_01 names xxxxx@local.ie), come back to the VERP address
    `to`, as the MTA delivering it writes: Delivered-To on top, the report's To rewritten."""
    raw = (BOUNCES / name).read_bytes()
    msg = email.message_from_bytes(raw)
    del msg["To"]
    msg["To"] = to
    return f"Delivered-To: {to}\n".encode() + msg.as_bytes()


def snapshot(store: Store) -> list[tuple[object, ...]]:
    rows = store.db.execute("SELECT * FROM bounces ORDER BY email, day").fetchall()
    subs = store.db.execute("SELECT * FROM subscribers ORDER BY email").fetchall()
    return [tuple(r) for r in rows] + [tuple(r) for r in subs]


def test_a_poll_counts_bounces_and_unsubscribes_once(tmp_path: Path, imap: dovecot.Dovecot) -> None:
    permanent, temporary = readers_of_the_corpus()
    readers = sorted(permanent | temporary | {VERP_READER, LEAVER, "stays@example.net"})
    # max_bounces 1: every permanent bounce is enough, so the outcome shows each one.
    config = make_config(tmp_path, readers, imap.port)
    config = dataclasses.replace(config, smtp=dataclasses.replace(config.smtp, max_bounces=1))
    store = Store.open(config.store.database)
    try:
        key = secret_key(store)
        corpus = sorted(BOUNCES.glob("*.txt"))
        imap.append(*(p.read_bytes() for p in corpus))
        verp = f"bounces+{address_tag(key, VERP_READER, BOUNCE_TAG)}@{DOMAIN}"
        leave = f"unsubscribe+{address_tag(key, LEAVER, UNSUBSCRIBE_TAG)}@{DOMAIN}"
        # Forged: another reader's bounce tag as an unsubscribe tag, and a made-up tag.
        forged = [
            f"unsubscribe+{address_tag(key, 'stays@example.net', BOUNCE_TAG)}@{DOMAIN}",
            f"unsubscribe+aaaaaaaaaaaaaaaa@{DOMAIN}",
        ]
        imap.append(
            verp_dsn(verp),
            unsubscribe_mail(leave.upper().replace("@" + DOMAIN.upper(), "@" + DOMAIN)),
            *(unsubscribe_mail(f, "stays@example.net") for f in forged),
        )
        total = len(corpus) + 4
        assert imap.unseen() == total

        started = time.perf_counter()
        report = poll_mailbox(config, store)
        took = time.perf_counter() - started
        print(f"poll: {total} messages in {took:.2f} s ({total / took:.0f} messages/s)")
        assert report.read == total, report.summary()
        assert report.unsubscribed == [LEAVER]
        statuses = {r.email: r.status for r in list_subscribers(config, store)}
        bouncing = {a for a, s in statuses.items() if s == SubscriberStatus.BOUNCING}
        # Every reader the corpus says bounced for good, and the one named by VERP only;
        # none of those whose mail was only delayed.
        assert bouncing == permanent | {VERP_READER}
        assert statuses[LEAVER] == SubscriberStatus.UNSUBSCRIBED
        assert statuses["stays@example.net"] == SubscriberStatus.ACTIVE
        assert all(statuses[a] == SubscriberStatus.ACTIVE for a in temporary)
        mailed = {s.email for s in active_subscribers(config, store)}
        assert mailed.isdisjoint(bouncing | {LEAVER})
        assert imap.unseen() == 0 and imap.count() == total  # marked seen, none deleted

        # A second poll reads nothing new and changes nothing.
        before = snapshot(store)
        again = poll_mailbox(config, store)
        assert (again.read, again.bounces, again.unsubscribed) == (0, [], [])
        assert snapshot(store) == before
    finally:
        store.close()


def test_no_such_user_is_enough_other_bounces_count_days(
    tmp_path: Path, imap: dovecot.Dovecot
) -> None:
    # With max_bounces 3, one report each: a DSN with Status 5.1.1 (no such user) makes
    # its reader bouncing at once; one with a plain 5.0.0 counts one day of three.
    hard, soft = "hard@example.net", "soft@example.net"
    config = make_config(tmp_path, [hard, soft], imap.port)
    assert config.smtp.max_bounces == 3
    store = Store.open(config.store.database)
    try:
        key = secret_key(store)
        assert re.search(rb"(?m)^Status: 5\.1\.1", (BOUNCES / "dsn_11.txt").read_bytes())
        assert re.search(rb"(?m)^Status: 5\.0\.0", (BOUNCES / "dsn_01.txt").read_bytes())
        imap.append(
            verp_dsn(f"bounces+{address_tag(key, hard, BOUNCE_TAG)}@{DOMAIN}", "dsn_11.txt"),
            verp_dsn(f"bounces+{address_tag(key, soft, BOUNCE_TAG)}@{DOMAIN}", "dsn_01.txt"),
        )
        report = poll_mailbox(config, store)
        assert sorted(report.bounces) == [hard, soft]
        statuses = {r.email: r.status for r in list_subscribers(config, store)}
        assert statuses == {hard: SubscriberStatus.BOUNCING, soft: SubscriberStatus.ACTIVE}
        [(days, hard_flag)] = store.db.execute(
            "SELECT count(*), max(hard) FROM bounces WHERE email = ?", [soft]
        ).fetchall()
        assert (days, hard_flag) == (1, 0)
    finally:
        store.close()


def test_a_wrong_password_names_the_mailbox(tmp_path: Path, imap: dovecot.Dovecot) -> None:
    config = make_config(tmp_path, [], imap.port, password="wrong")
    store = Store.open(config.store.database)
    try:
        with pytest.raises(MailboxError, match=rf"127\.0\.0\.1:{imap.port}: login as .* refused"):
            poll_mailbox(config, store)
    finally:
        store.close()


def test_no_mailbox_configured_polls_nothing(tmp_path: Path) -> None:
    config = dataclasses.replace(make_config(tmp_path, []), bounces=BouncesConfig())
    store = Store.open(config.store.database)
    try:
        report = poll_mailbox(config, store)
    finally:
        store.close()
    assert report.not_polled and "bounces.imap_host" in report.summary()


def test_serve_polls_the_mailbox_on_its_schedule(tmp_path: Path, imap: dovecot.Dovecot) -> None:
    # `digest serve`'s scheduler has a bounces job only with a mailbox configured; a
    # run of it reads the mail, and a mailbox that is down fails the run, not the thread.
    from digest.models import JobStatus
    from digest.service.schedule import Scheduler

    config = make_config(tmp_path, [LEAVER], imap.port)
    store = Store.open(config.store.database)
    try:
        tag = address_tag(secret_key(store), LEAVER, UNSUBSCRIBE_TAG)
    finally:
        store.close()
    imap.append(unsubscribe_mail(f"unsubscribe+{tag}@{DOMAIN}"))
    scheduler = Scheduler(config)
    scheduler.start(catch_up=False)
    try:
        job = scheduler.aps.get_job("bounces")
        assert job is not None and job.trigger.interval.total_seconds() == 15 * 60
        assert scheduler.run_bounces() == JobStatus.OK
    finally:
        scheduler.shutdown()
    store = Store.open(config.store.database)
    try:
        assert {r.email: r.status for r in list_subscribers(config, store)} == {
            LEAVER: SubscriberStatus.UNSUBSCRIBED
        }
    finally:
        store.close()
    down = dataclasses.replace(
        config, bounces=dataclasses.replace(config.bounces, imap_port=free_port())
    )
    assert Scheduler(down).run_bounces() == JobStatus.FAILED
    nothing = dataclasses.replace(config, bounces=BouncesConfig())
    idle = Scheduler(nothing)
    idle.start(catch_up=False)
    try:
        assert idle.aps.get_job("bounces") is None
    finally:
        idle.shutdown()


def test_the_bounces_command(tmp_path: Path, imap: dovecot.Dovecot) -> None:
    from tests.support.cli import cli
    from tests.support.config import write_config

    database = str(tmp_path / "digest.db")
    path = write_config(
        tmp_path,
        store={"database": database},
        smtp={"sender": f"digest@{DOMAIN}"},
        bounces={
            "imap_host": "127.0.0.1",
            "imap_port": imap.port,
            "imap_security": "none",
            "imap_user": imap.user,
        },
        subscribers=[{"email": LEAVER}],
    )
    store = Store.open(database)
    try:
        tag = address_tag(secret_key(store), LEAVER, UNSUBSCRIBE_TAG)
    finally:
        store.close()
    imap.append(unsubscribe_mail(f"unsubscribe+{tag}@{DOMAIN}"), b"Subject: hello\r\n\r\nhi\r\n")
    env = {"DIGEST_BOUNCES_PASSWORD": imap.password}
    result = cli(path, "bounces", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "bounces: read 2 new messages: 0 bounces counted, 1 unsubscribed, 0 temporary, "
        "1 not ours or not a bounce"
    )
    listed = cli(path, "subscribers", "list")
    assert re.search(rf"(?m)^{re.escape(LEAVER)}\tunsubscribed\t", listed.stdout)
    wrong = cli(path, "bounces", env={"DIGEST_BOUNCES_PASSWORD": "nope"})
    assert wrong.exit_code == 1 and "refused" in wrong.stderr and str(imap.port) in wrong.stderr
    none = cli(write_config(tmp_path, "none.toml", store={"database": database}), "bounces")
    assert none.exit_code == 1 and "bounces.imap_host" in none.stdout


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_the_mailbox_over_tls(tmp_path: Path, security: str) -> None:
    # The default, implicit TLS (and STARTTLS), against Dovecot with a throwaway
    # certificate: trusted through bounces.ca_file, refused without it.
    from tests.support.smtpserver import self_signed

    need_dovecot()
    cert, key = self_signed(tmp_path)
    with dovecot.Dovecot(user=f"bounces@{DOMAIN}", tls=(cert, key)) as server:
        port = server.tls_port if security == "tls" else server.port
        base = make_config(tmp_path, [LEAVER], port, imap_security=security)
        store = Store.open(base.store.database)
        try:
            with pytest.raises(MailboxError, match="certificate verify failed"):
                poll_mailbox(base, store)
            trusted = dataclasses.replace(
                base, bounces=dataclasses.replace(base.bounces, ca_file=str(cert))
            )
            tag = address_tag(secret_key(store), LEAVER, UNSUBSCRIBE_TAG)
            server.append(unsubscribe_mail(f"unsubscribe+{tag}@{DOMAIN}"))
            assert poll_mailbox(trusted, store).unsubscribed == [LEAVER]
        finally:
            store.close()
