"""One-off plain-text mails: subscription confirmations and notes to the operator.

The daily digest has its own renderer and ledger (render/email.py, deliver/digest.py); these are
single messages sent through the same SMTP settings, one session each.
"""

from __future__ import annotations

from email.utils import formatdate, make_msgid

from digest.config import Config
from digest.deliver.smtp import Mailer
from digest.errors import DeliveryError, PermanentFailure, TemporaryFailure
from digest.render.mailheaders import from_address, new_message, sender_address


def send_notice(config: Config, to: str, subject: str, text: str) -> None:
    """Send one plain-text mail to `to`.

    Raises DeliveryError naming the server and its reply when the mail was not accepted
    (after the configured retries for temporary failures).
    """
    message = new_message()
    message["From"] = from_address(config)
    message["To"] = to
    message["Subject"] = " ".join(subject.split())  # one line, whatever went in
    message["Date"] = formatdate(usegmt=True)
    domain = config.email.domain or sender_address(config).rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    message.set_content(text)
    with Mailer(config.smtp) as mailer:
        try:
            mailer.deliver(message, to)
        except (PermanentFailure, TemporaryFailure) as e:
            raise DeliveryError(mailer.where, f"refused the mail to {to}: {e.reply}") from None
