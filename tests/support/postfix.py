"""Debian's Postfix on 127.0.0.1, started by a test with its own config and queue in a
temporary folder, relaying everything it takes to a test server (aiosmtpd).

Postfix's `postfix start` refuses a config folder not listed in the system's main.cf, so
its `master` daemon is started directly (`master -c DIR -d`, in the foreground, stopped
by SIGTERM). It must run as root (it drops to the `postfix` user); the queue folders are
made here with the owners `postfix set-permissions` would give them.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.net import free_port

MASTER = Path("/usr/lib/postfix/sbin/master")

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
"""


def missing() -> str:
    """Why Postfix cannot be started here ("" if it can)."""
    if not MASTER.exists():
        return "Postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "Postfix's master must be started as root"
    return ""


class Postfix:
    """Postfix on 127.0.0.1:`port`, relaying to 127.0.0.1:`relay_port`; `rejected` maps a
    recipient to the text of a 554 refusal (smtpd's check_recipient_access)."""

    def __init__(self, relay_port: int, rejected: dict[str, str] | None = None) -> None:
        self.port = free_port()
        # Not pytest's tmp_path: the postfix user must reach the queue, and that is 0700.
        self.folder = Path(tempfile.mkdtemp(prefix="postfix-", dir="/tmp"))
        self.folder.chmod(0o755)
        conf, queue, data = self.folder / "conf", self.folder / "queue", self.folder / "data"
        for d in (conf, queue, data):
            d.mkdir()
        access = conf / "recipients"
        access.write_text("".join(f"{a} REJECT {why}\n" for a, why in (rejected or {}).items()))
        (conf / "main.cf").write_text(
            f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = no
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = check_recipient_access texthash:{access}, permit
alias_maps =
alias_database =
"""
        )
        (conf / "master.cf").write_text(MASTER_CF.format(port=self.port))
        private = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold")
        for name in (*private, "incoming", "private", "saved", "trace"):
            (queue / name).mkdir()
            shutil.chown(queue / name, "postfix", "root")
            (queue / name).chmod(0o700)
        for name, mode in (("maildrop", 0o730), ("public", 0o710)):
            (queue / name).mkdir()
            shutil.chown(queue / name, "postfix", "postdrop")
            (queue / name).chmod(mode)
        (queue / "pid").mkdir()
        shutil.chown(data, "postfix")
        data.chmod(0o700)
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Postfix:
        self.proc = subprocess.Popen(
            [str(MASTER), "-c", str(self.conf), "-d"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:  # ready when smtpd answers EHLO
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as conn:
                    if conn.ehlo()[0] == 250:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"Postfix did not start (exit code {self.proc.returncode})")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # master stops its children too
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)
