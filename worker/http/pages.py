"""The small HTML pages of the unsubscribe flow, in the lead's language (en, da, fi).

Plain HTML, no scripts, no external resources: the page must work in any mail client's
browser and must not leak the token (it is in the URL) to anyone else.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template
from typing import Literal

PageKind = Literal["confirm", "already", "done", "invalid", "unavailable"]

#: Every text of every page, per language. Keep the keys identical across languages.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "confirm_title": "Unsubscribe",
        "confirm": "Do you want to stop receiving emails from {sender}?",
        "button": "Unsubscribe",
        "already_title": "You are unsubscribed",
        "already": "You are already unsubscribed and will not receive more emails from {sender}.",
        "done_title": "You are unsubscribed",
        "done": "You will not receive any more emails from {sender}.",
        "invalid_title": "This link does not work",
        "invalid": "The link may have been copied incompletely. Please use the unsubscribe "
        "link in the most recent email.",
        "unavailable_title": "Please try again",
        "unavailable": "Something went wrong on our side. Please try again in a minute.",
        "sender": "us",
    },
    "da": {
        "confirm_title": "Afmeld",
        "confirm": "Vil du afmelde dig e-mails fra {sender}?",
        "button": "Afmeld",
        "already_title": "Du er afmeldt",
        "already": "Du er allerede afmeldt og får ikke flere e-mails fra {sender}.",
        "done_title": "Du er afmeldt",
        "done": "Du får ikke flere e-mails fra {sender}.",
        "invalid_title": "Linket virker ikke",
        "invalid": "Linket er måske ikke kopieret helt. Brug afmeldingslinket i den seneste "
        "e-mail.",
        "unavailable_title": "Prøv igen",
        "unavailable": "Noget gik galt hos os. Prøv igen om et øjeblik.",
        "sender": "os",
    },
    "fi": {
        "confirm_title": "Peru tilaus",
        "confirm": "Haluatko lopettaa sähköpostien vastaanottamisen lähettäjältä {sender}?",
        "button": "Peru tilaus",
        "already_title": "Tilaus on peruttu",
        "already": "Tilauksesi on jo peruttu, etkä saa enää sähköposteja lähettäjältä {sender}.",
        "done_title": "Tilaus on peruttu",
        "done": "Et saa enää sähköposteja lähettäjältä {sender}.",
        "invalid_title": "Linkki ei toimi",
        "invalid": "Linkki on ehkä kopioitu vajaana. Käytä uusimman sähköpostin peruutuslinkkiä.",
        "unavailable_title": "Yritä uudelleen",
        "unavailable": "Jotain meni vikaan. Yritä hetken kuluttua uudelleen.",
        "sender": "meiltä",
    },
}


@cache
def _template() -> Template:
    return Template(resources.files("worker.http").joinpath("page.html").read_text("utf-8"))


def pick_language(lead_locale: str | None, accept_language: str | None, default: str | None) -> str:
    """The first language we have a translation for, trying in order the lead's locale,
    the browser's ``Accept-Language`` (useful when the lead is unknown) and the
    configured default locale; English when none fits."""
    tags = [lead_locale, *_accepted(accept_language or ""), default]
    for tag in tags:
        if not tag:
            continue
        primary = tag.split("-")[0].split("_")[0].lower()
        if primary in TEXTS:
            return primary
    return "en"


def _accepted(header: str) -> list[str]:
    """Languages of an Accept-Language header, best first."""
    ranked = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, position, tag.strip()))
    return [tag for _, _, tag in sorted(ranked)]


def render(kind: PageKind, language: str, sender: str | None = None, action: str = "") -> str:
    """One page as HTML.

    Args:
        kind: Which page.
        language: A key of :data:`TEXTS` (anything else falls back to English).
        sender: Who the emails come from (the from-name); "us" when unknown.
        action: The form's target (the same URL) for the confirmation page.
    """
    texts = TEXTS.get(language, TEXTS["en"])
    who = sender or texts["sender"]
    message = texts[kind].format(sender=who)
    form = ""
    if kind == "confirm":
        # The hidden field makes the page's POST the RFC 8058 one-click body as well.
        form = (
            f'<form method="post" action="{html.escape(action, quote=True)}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<input type="hidden" name="source" value="page">'
            f'<button type="submit">{html.escape(texts["button"])}</button></form>'
        )
    return _template().substitute(
        lang=html.escape(language, quote=True),
        title=html.escape(texts[f"{kind}_title"]),
        heading=html.escape(texts[f"{kind}_title"]),
        message=html.escape(message),
        form=form,
    )
