"""The outbox backend: every message becomes one RFC 5322 ``.eml`` file.

Used in development, in tests and wherever another system picks the files up. The
outbox is idempotent per key: the file name is derived from the message's idempotency
key, and a second send of the same key finds the file and reports a duplicate instead
of writing it again, even across threads and processes sharing the directory.
"""

from __future__ import annotations

import contextlib
import email.errors
import errno
import os
import re
import tempfile
import threading
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import formatdate
from pathlib import Path

from worker.delivery.base import (
    ONE_CLICK,
    Delivery,
    Message,
    SendResult,
    header_safe,
    key_digest,
    list_unsubscribe,
    safe_file_stem,
)
from worker.errors import PermanentDeliveryError, TransientDeliveryError

# Headers whose value must stay one verbatim line: a URL folded or turned into an
# RFC 2047 encoded word (what the default 78-column folding does with a long token) is
# no longer a URL to mail clients. 998 is RFC 5322's hard line limit.
_VERBATIM_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post", "message-id"})
_WIDE = SMTP.clone(max_line_length=998)
_DOT_ATOM = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
# errno values meaning "this file system cannot make hard links"; we then fall back to
# os.replace under a lock (atomic, but only de-duplicated within this process).
_NO_LINK = frozenset(
    {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
)
# mkstemp creates files 0600; outbox files are for other tools to read, so they get the
# usual 0644 minus the umask. Reading the umask means setting it, so do it once, early.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o644 & ~_UMASK


class _OutboxPolicy(EmailPolicy):
    """``policy.SMTP`` (CRLF, 78-column folding) except for the verbatim headers."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() in _VERBATIM_HEADERS:
            return str(_WIDE.fold(name, value))
        return str(super().fold(name, value))

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in _VERBATIM_HEADERS:
            return _WIDE.fold_binary(name, value)
        return super().fold_binary(name, value)


#: The policy of every outbox file: UTF-8 aware, CRLF line endings, RFC 2047 encoded
#: non-ASCII headers, 7bit/8bit bodies when lines are short, else quoted-printable/base64.
POLICY = _OutboxPolicy(linesep="\r\n")


def message_id_for(message: Message) -> str:
    """Return the deterministic ``Message-ID`` of a message (angle brackets included).

    The id depends only on the idempotency key and the sender's domain, so a resend of
    the same (enrollment, step) carries the same id and is recognisable downstream.
    """
    domain = message.from_email.rpartition("@")[2].lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = ""
    if not _DOT_ATOM.match(domain):
        domain = "nurture.invalid"
    return f"<{key_digest(message.key)[:32]}.nurture@{domain}>"


def _address(email_address: str, name: str | None) -> Address:
    """Build a header address, IDNA-encoding the domain so it survives serialization."""
    local, at, domain = email_address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{email_address!r} is not an email address")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{email_address!r} has an invalid domain") from exc
    return Address(display_name=header_safe(name or ""), addr_spec=f"{local}@{domain}")


def render_eml(message: Message, *, date: str | None = None) -> bytes:
    """Render a message as RFC 5322 bytes (multipart/alternative when it has HTML).

    Args:
        message: The message.
        date: ``Date`` header value; the current time when omitted.

    Returns:
        The complete ``.eml`` file content, CRLF line endings.

    Raises:
        PermanentDeliveryError: When the message cannot be expressed as an email
            (no valid address, a non-ASCII local part, ...); resending cannot help.
    """
    try:
        eml = EmailMessage(policy=POLICY)
        eml["Message-ID"] = message_id_for(message)
        eml["Date"] = date or formatdate(usegmt=True)
        eml["From"] = _address(message.from_email, message.from_name)
        eml["To"] = _address(message.to_email, message.to_name)
        if message.reply_to_email:
            eml["Reply-To"] = _address(message.reply_to_email, message.reply_to_name)
        eml["Subject"] = header_safe(message.subject)
        if message.internal:
            eml["X-Nurture-Internal"] = "notify"
        else:
            eml["List-Unsubscribe"] = list_unsubscribe(message)
            eml["List-Unsubscribe-Post"] = ONE_CLICK
        eml["X-Nurture-Lead"] = header_safe(message.lead_id)
        eml["X-Nurture-Sequence"] = header_safe(message.sequence)
        eml["X-Nurture-Step"] = header_safe(message.step)
        eml["X-Nurture-Key"] = header_safe(message.key)
        if message.categories:
            eml["X-Nurture-Categories"] = ", ".join(header_safe(c) for c in message.categories)
        eml.set_content(message.text, subtype="plain", charset="utf-8")
        if message.html:
            eml.add_alternative(message.html, subtype="html", charset="utf-8")
        return eml.as_bytes(policy=POLICY)
    except (ValueError, IndexError, TypeError, email.errors.MessageError) as exc:
        # email's header defects are ValueErrors; an empty address is an IndexError.
        raise PermanentDeliveryError(f"outbox: cannot build message {message.key}: {exc}") from exc


class OutboxDelivery(Delivery):
    """Writes each message to ``<directory>/<key>.eml``, once per key.

    Thread-safe and safe for several processes sharing the directory: the file is
    written to a temp file in the same directory, fsynced, then hard-linked into place,
    which fails atomically when the name already exists — so concurrent sends of one
    key produce exactly one file, nobody ever sees a partial file, and an existing file
    is never rewritten.

    Attributes:
        directory: Where the files go; created when missing.
    """

    name = "outbox"

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        """Create the backend and its directory.

        Args:
            directory: The outbox directory (``NURTURE_OUTBOX_DIR``).
            fsync: Flush each file and the directory to disk before reporting success.
                Only benchmarks on throw-away directories should turn it off.

        Raises:
            OSError: When the directory cannot be created.
        """
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()  # only for the no-hard-link fallback

    def path_for(self, key: str) -> Path:
        """Return the file a message with this idempotency key is written to."""
        return self.directory / f"{safe_file_stem(key)}.eml"

    def send(self, message: Message) -> SendResult:
        """Write the message unless a file for its key exists already.

        Returns:
            ``SendResult(provider_id=<Message-ID>, duplicate=...)``; ``duplicate`` is
            True when the file already existed (it is left untouched).

        Raises:
            PermanentDeliveryError: The message cannot be rendered as an email.
            TransientDeliveryError: The file could not be written (disk full, missing
                permissions, ...); nothing was left behind.
        """
        path = self.path_for(message.key)
        provider_id = message_id_for(message)
        # Cheap early exit for the common duplicate; the link below is the real check.
        if path.exists():
            return SendResult(provider_id=provider_id, duplicate=True)
        data = render_eml(message)
        try:
            created = self._write_once(path, data)
        except OSError as exc:
            raise TransientDeliveryError(f"outbox: cannot write {path}: {exc}") from exc
        return SendResult(provider_id=provider_id, duplicate=not created)

    def close(self) -> None:
        """Nothing to release: every send opens and closes its own files."""

    def _write_once(self, path: Path, data: bytes) -> bool:
        """Atomically create ``path`` with ``data``; False when it already existed."""
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=self.directory)
        except FileNotFoundError:
            # The directory was removed while we run (an operator emptying the outbox).
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self._fsync:
                    os.fsync(handle.fileno())
            os.chmod(tmp_name, _FILE_MODE)
            created = self._link_into_place(tmp_name, path)
            if created and self._fsync:
                self._fsync_directory()
            return created
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)

    def _link_into_place(self, tmp_name: str, path: Path) -> bool:
        try:
            # link(2) refuses an existing target: an atomic "create if absent" that also
            # holds across processes, unlike os.replace, which would overwrite it.
            os.link(tmp_name, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        with self._lock:
            if path.exists():
                return False
            os.replace(tmp_name, path)
            return True

    def _fsync_directory(self) -> None:
        # Makes the new directory entry itself durable; not possible on every platform.
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
