"""A real Dovecot IMAP server on 127.0.0.1, started by a test with its own config in a
temporary folder: one user from a passwd-file, a Maildir in the folder, no TLS (loopback
only), nothing from /etc/dovecot.

    with Dovecot() as imap:
        imap.append(raw_message_bytes)
        ... poll 127.0.0.1:imap.port as imap.user / imap.password ...
        imap.unseen()  # how many messages are not \\Seen yet

Dovecot refuses to give mail to uid 0, so as root the mail processes run as the Debian
package's `dovecot` user, which then owns the Maildir.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.net import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
{ssl}
disable_plaintext_auth = no
listen = 127.0.0.1
protocols = imap
auth_mechanisms = plain login
{users}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
first_valid_uid = {uid}
mail_location = maildir:~/Maildir
"""


def available() -> bool:
    return Path(DOVECOT).exists()


class Dovecot:
    """Dovecot serving one mailbox (`user`, `password`) on 127.0.0.1:`port`."""

    def __init__(
        self, user: str = "bounces@papers.example.org", tls: tuple[Path, Path] | None = None
    ) -> None:
        # Not the test's tmp_path: pytest makes its folders 0700 for root, and the mail
        # processes run as the `dovecot` user, which must reach the files.
        self.root = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
        self.root.chmod(0o755)
        self.user = user
        self.password = "imap-secret"
        self.port = free_port()
        # With `tls` (certificate, key): implicit TLS on tls_port as well (and STARTTLS).
        self.tls = tls
        self.tls_port = free_port() if tls else 0
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Dovecot:
        for sub in ("run", "state", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        users = ""
        if os.getuid() == 0:
            owner = pwd.getpwnam("dovecot")
            uid, gid = owner.pw_uid, owner.pw_gid
            os.chown(self.root / "home", uid, gid)
        else:  # as a plain user, every process runs as that user
            uid, gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(uid).pw_name
            users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
        (self.root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        conf = self.root / "dovecot.conf"
        ssl = "ssl = no"
        if self.tls:
            cert, key = self.tls
            for src, name in ((cert, "cert.pem"), (key, "key.pem")):
                shutil.copy(src, self.root / name)  # where the dovecot user can read it
            ssl = f"ssl = yes\nssl_cert = <{self.root}/cert.pem\nssl_key = <{self.root}/key.pem"
        conf.write_text(
            CONFIG.format(
                root=self.root,
                port=self.port,
                tls_port=self.tls_port,
                uid=uid,
                gid=gid,
                users=users,
                ssl=ssl,
            )
        )
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with self.session():
                    break
            except (OSError, imaplib.IMAP4.error):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.root / "dovecot.log"
                    text = log.read_text() if log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"dovecot did not start: {text[-2000:]}") from None
                time.sleep(0.1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def session(self, folder: str = "INBOX"):  # type: ignore[no-untyped-def]
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=5)
        try:
            conn.login(self.user, self.password)
            conn.select(folder)
            yield conn
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.logout()

    def append(self, *messages: bytes) -> None:
        """Put `messages` in INBOX, unseen (IMAP APPEND, as a delivery agent would)."""
        with self.session() as conn:
            for raw in messages:
                typ, data = conn.append("INBOX", None, None, raw)
                assert typ == "OK", data

    def unseen(self) -> int:
        """How many messages of INBOX are not \\Seen."""
        with self.session() as conn:
            typ, data = conn.search(None, "UNSEEN")
            assert typ == "OK", data
            return len(data[0].split())

    def count(self) -> int:
        with self.session() as conn:
            typ, data = conn.search(None, "ALL")
            assert typ == "OK", data
            return len(data[0].split())
