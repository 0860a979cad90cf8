"""The address rule at the door: an address we accept is one SendGrid can send to.

SendGrid's "Invalid email addresses" page (https://www.twilio.com/docs/sendgrid/ui/sending-email/invalid-emails)
lists what it refuses: a local part (before the ``@``) other than ASCII letters, digits and
``!#$%&'*+-/=?^_`{|}~.``, a local part starting with a dot or holding two dots in a row,
a local part over 64 octets, a domain over 255 octets, an address over 254 octets.
Unicode local parts (RFC 6531, SMTPUTF8) are not sent by SendGrid (its maintainers:
https://github.com/sendgrid/sendgrid-python/pull/119 "a feature that SendGrid does not
support"), so an address like ``jörg@example.de`` is refused here with the reason instead
of being accepted and dead-lettered at send time.

Internationalised domain names (RFC 5890) are accepted when they convert to their ASCII
form (IDNA 2008 with UTS #46 mapping, the ``idna`` package), and are stored in that form
(``anne@exämple.dk`` becomes ``anne@xn--exmple-cua.dk``): the form SendGrid is given and
the form its bounce and unsubscribe events name, so suppressions match.
"""

from __future__ import annotations

import re

import idna

MAX_LOCAL = 64
MAX_ADDRESS = 254
MAX_DOMAIN = 253  # RFC 1035's 255 octets on the wire are 253 characters as text
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def sendable_address(value: str) -> str:
    """Check that an address can be sent and return the form to store.

    Args:
        value: The address as the CRM or the caller wrote it (already stripped).

    Returns:
        The address, with an internationalised domain turned into its ASCII (punycode)
        form; an all-ASCII address is returned unchanged.

    Raises:
        ValueError: Saying what makes the address unsendable, in plain words.
    """
    if value.count("@") != 1:
        raise ValueError(f"{value!r} is not an email address (it needs exactly one @)")
    local, domain = value.split("@")
    _check_local(value, local)
    ascii_domain = _ascii_domain(value, domain)
    address = f"{local}@{ascii_domain}" if not domain.isascii() else value
    if len(address) > MAX_ADDRESS:
        raise ValueError(f"{value!r} is longer than {MAX_ADDRESS} characters")
    return address


def _check_local(value: str, local: str) -> None:
    if not local:
        raise ValueError(f"{value!r} is not an email address (nothing before the @)")
    if not local.isascii():
        odd = next(ch for ch in local if not ch.isascii())
        raise ValueError(
            f"{value!r} cannot be sent: the part before the @ has a non-ASCII character "
            f"({odd!r}), which SendGrid does not send to; ask for another address"
        )
    if local.startswith('"'):
        raise ValueError(f"{value!r} cannot be sent: quoted local parts are not supported")
    if not _LOCAL.match(local):
        odd = next(ch for ch in local if not _LOCAL.match(ch))
        raise ValueError(f"{value!r} is not an email address ({odd!r} before the @)")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError(
            f"{value!r} is not an email address (a dot at the start or end of the part "
            "before the @, or two dots in a row)"
        )
    if len(local) > MAX_LOCAL:
        raise ValueError(
            f"{value!r} is not an email address (more than {MAX_LOCAL} characters before the @)"
        )


def _ascii_domain(value: str, domain: str) -> str:
    if not domain:
        raise ValueError(f"{value!r} is not an email address (nothing after the @)")
    if domain.startswith("["):
        raise ValueError(f"{value!r} cannot be sent: the domain is an IP address literal")
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(
                f"{value!r} is not an email address (the domain is not a valid "
                f"internationalised domain name: {exc})"
            ) from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value!r} is not an email address (the domain after the @ must be a name "
            "such as example.com: letters, digits and hyphens, with a dot)"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} is not an email address (the domain ends in a number)")
    if len(ascii_domain) > MAX_DOMAIN:
        raise ValueError(f"{value!r} is not an email address (the domain is too long)")
    return ascii_domain
