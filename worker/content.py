"""The content library: value-first pieces the emails point to.

Every touch of a nurture sequence should give the lead something useful about *their*
problem (a case study, a testimonial, a guide, a webinar, an outcome story) and never
the same piece twice. Marketing ops keep these pieces in ``content/*.yaml``::

    items:
      - id: saas-churn-halved
        kind: case_study
        title: How a 40-person SaaS team halved churn in two quarters
        summary: Onboarding calls replaced by a three-email activation path.
        outcome: Monthly churn from 4.1 % to 2.0 %
        url: https://example.com/cases/saas-churn
        tags: {industry: [saas], problem: [churn, onboarding]}
        locale: en            # optional, default en

Templates ask for one with ``content("case_study")``; :meth:`ContentLibrary.pick`
chooses the best fit for the lead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from worker.errors import Problem, did_you_mean
from worker.yamlfile import display_path, read_yaml, yaml_line

KINDS = ("case_study", "testimonial", "guide", "webinar", "outcome_story")
REQUIRED = ("id", "kind", "title", "summary", "outcome", "url")
OPTIONAL = ("tags", "locale", "quote", "author", "author_role", "company", "date")
# Keys kept in ContentItem.extra (read in templates as item.quote, item.author, ...).
EXTRA_KEYS = ("quote", "author", "author_role", "company", "date")
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_LOCALE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")


def normalize_locale(tag: str | None) -> str | None:
    """Return a BCP 47 tag in its usual spelling (``da-dk`` -> ``da-DK``), or None.

    None is returned for anything that is not a language tag, so a bad value from a
    CRM can never reach a file path.
    """
    if not tag:
        return None
    tag = tag.strip().replace("_", "-")
    if not _LOCALE.match(tag):
        return None
    parts = tag.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            out.append(part.upper())  # region: DK
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())  # script: Hant
        else:
            out.append(part.lower())
    return "-".join(out)


def language_tag(tag: str | None) -> str | None:
    """:func:`normalize_locale` of a tag that starts with a 2- or 3-letter language
    (``da``, ``da-DK``; not ``Danish``), else None: what a ``locale:`` setting accepts."""
    found = normalize_locale(tag)
    return found if found and 2 <= len(found.split("-")[0]) <= 3 else None


def locale_chain(locale: str | None, default_locale: str = "en") -> tuple[str, ...]:
    """The locales to try for a lead, most specific first: ``da-DK`` -> ``(da-DK, da)``.

    A lead without a (valid) locale gets the chain of ``default_locale``.
    """
    tag = normalize_locale(locale) or normalize_locale(default_locale)
    if tag is None:
        return ()
    parts = tag.split("-")
    return tuple("-".join(parts[:n]) for n in range(len(parts), 0, -1))


@dataclass(frozen=True)
class ContentItem:
    """One value piece (case study, testimonial, guide, webinar or outcome story).

    Templates read the fields as attributes (``cs.title``, ``cs.url``); keys kept in
    :attr:`extra` (``quote``, ``author``, ...) read the same way (``t.quote``).

    Attributes:
        id: Unique id across the library; what a lead is remembered to have received.
        kind: One of :data:`KINDS`.
        title: Headline.
        summary: One or two sentences on the story.
        outcome: The result the client got, in their terms.
        url: Where the full piece lives.
        tags: Lowercase tag values by key, e.g. ``{"industry": ("saas",)}``.
        locale: Language of the piece.
        extra: Optional keys such as ``quote`` and ``author``.
        file: The YAML file it came from.
        line: The 1-based line where the item starts.
    """

    id: str
    kind: str
    title: str
    summary: str
    outcome: str
    url: str
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    locale: str = "en"
    extra: Mapping[str, Any] = field(default_factory=dict)
    file: str = ""
    line: int = 0

    def __getitem__(self, key: str) -> Any:
        # Jinja falls back to item[key] when item.key is not an attribute, so this is
        # what makes {{ t.quote }} work for the optional keys.
        return self.extra[key]


class ContentLibrary:
    """The loaded content items and the rule for picking one for a lead."""

    def __init__(self, items: Iterable[ContentItem] = (), default_locale: str = "en") -> None:
        """Keep the items, sorted by id so every pick is deterministic.

        Args:
            items: Valid items (ids must be unique).
            default_locale: Locale of leads without their own; its pieces are the
                fallback for every lead.
        """
        self.items: tuple[ContentItem, ...] = tuple(sorted(items, key=lambda item: item.id))
        self.by_id: Mapping[str, ContentItem] = MappingProxyType(
            {item.id: item for item in self.items}
        )
        self.default_locale = default_locale
        # Precomputed per item for pick(), which runs on every render: tag values as
        # sets, and the items grouped by kind.
        self._tagsets: dict[str, dict[str, frozenset[str]]] = {
            item.id: {key: frozenset(values) for key, values in item.tags.items()}
            for item in self.items
        }
        self._by_kind: dict[str | None, tuple[ContentItem, ...]] = {None: self.items}
        for kind in KINDS:
            self._by_kind[kind] = tuple(item for item in self.items if item.kind == kind)
        self._ranks: dict[str | None, dict[str, int]] = {}
        self._by_url: dict[str, tuple[ContentItem, ...]] = {}
        for item in self.items:
            key = _url_key(item.url)
            self._by_url[key] = (*self._by_url.get(key, ()), item)

    def by_url(self, url: str) -> tuple[ContentItem, ...]:
        """The pieces living at ``url`` (every language version), ignoring the query
        string and fragment a template or click tracking may add."""
        return self._by_url.get(_url_key(url), ())

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def load(
        cls, content_dir: Path, default_locale: str = "en"
    ) -> tuple[ContentLibrary, list[Problem]]:
        """Read every ``*.yaml``/``*.yml`` file of ``content_dir``.

        A missing directory is an empty library (content is optional). Bad items are
        left out and reported; good ones are kept, so one typo does not empty the
        library.

        Returns:
            The library of valid items and every problem found.
        """
        problems: list[Problem] = []
        items: list[ContentItem] = []
        seen: dict[str, ContentItem] = {}
        if not content_dir.is_dir():
            return cls((), default_locale), problems
        files = sorted(
            p for p in content_dir.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
        )
        for path in files:
            for item in _load_file(path, problems):
                first = seen.get(item.id)
                if first is not None:
                    problems.append(
                        Problem(
                            item.file,
                            item.line,
                            f"content id `{item.id}` is used twice (first at "
                            f"{first.file}:{first.line})",
                            "give each piece its own id; leads are remembered by id, so "
                            "never reuse one for a different piece",
                        )
                    )
                    continue
                seen[item.id] = item
                items.append(item)
        return cls(items, default_locale), problems

    def pick(
        self,
        kind: str | None,
        lead: Mapping[str, Any],
        locale: str | None,
        received: frozenset[str],
        *,
        preferred: frozenset[str] = frozenset(),
        **tags: str,
    ) -> ContentItem | None:
        """The best piece of ``kind`` for this lead that it has not received yet.

        Only pieces in ``locale``'s language are offered (``da-DK`` offers ``da-DK``
        and ``da`` pieces), so an email never mixes languages: the renderer passes the
        language of the template it found, and when that language has nothing left
        the template's ``{% else %}`` text is used, in the same language. Among those,
        ranking, highest first: how many of the explicit ``tags`` the item carries;
        how many of its tag values the lead clicked before (``preferred``: value-first
        nurture gives more of what the lead showed interest in); how many of its tag
        keys match the lead's attributes of the same name (a
        string or a list, compared case-insensitively); the most specific locale
        (``da-DK`` before ``da``); finally the id, so the answer never changes
        between runs.

        Args:
            kind: One of :data:`KINDS`, or None for any kind.
            lead: The lead (``attributes`` is read).
            locale: The email's locale (the lead's, or the language of the fallback
                template used), or None for the default.
            received: Ids the lead already got (never offered again).
            preferred: Tag values (lowercase) of pieces the lead clicked.
            **tags: Extra tags to prefer, e.g. ``industry="saas"``.

        Returns:
            The item, or None when nothing is left.
        """
        rank_of = self._ranks.get(locale)
        if rank_of is None:
            rank_of = {}
            # The email's language only: a fallback to the default language's pieces
            # would put English text inside a Danish email.
            for loc in locale_chain(locale, self.default_locale):
                rank_of.setdefault(loc, len(rank_of))
            if len(self._ranks) < 1000:  # locales come from CRM data: keep it bounded
                self._ranks[locale] = rank_of
        attributes = lead.get("attributes") or {}
        wanted = {key: _as_values(value) for key, value in tags.items()}
        lead_values: dict[str, set[str]] = {}
        best: tuple[tuple[int, int, int, int, str], ContentItem] | None = None
        for item in self._by_kind.get(kind, ()):
            if item.id in received:
                continue
            locale_rank = rank_of.get(item.locale)
            if locale_rank is None:
                continue
            tagsets = self._tagsets[item.id]
            explicit = sum(
                1 for key, values in wanted.items() if not values.isdisjoint(tagsets.get(key, ()))
            )
            clicked = (
                sum(1 for values in tagsets.values() if not values.isdisjoint(preferred))
                if preferred
                else 0
            )
            implicit = 0
            for key, values in tagsets.items():
                if key not in attributes:
                    continue
                if key not in lead_values:
                    lead_values[key] = _as_values(attributes[key])
                if not values.isdisjoint(lead_values[key]):
                    implicit += 1
            key_ = (-explicit, -clicked, -implicit, locale_rank, item.id)
            if best is None or key_ < best[0]:
                best = (key_, item)
        return best[1] if best else None


def _url_key(url: str) -> str:
    """A URL without query, fragment or trailing slash, for matching clicked links."""
    return url.split("#", 1)[0].split("?", 1)[0].rstrip("/").lower()


def _as_values(value: Any) -> set[str]:
    """A tag value or lead attribute as a set of lowercase strings."""
    if value is None:
        return set()
    if isinstance(value, list | tuple | set | frozenset):
        return {str(v).strip().lower() for v in value if v is not None}
    return {str(value).strip().lower()}


def _load_file(path: Path, problems: list[Problem]) -> list[ContentItem]:
    """Parse one content file; append problems, return its valid items."""
    file = display_path(path)
    data, found = read_yaml(path.read_bytes(), file, "see docs/templates.md")
    problems.extend(found)
    if data is None:
        return []
    if isinstance(data, CommentedMap) and "items" in data:
        extra_keys = [k for k in data if k != "items"]
        for key in extra_keys:
            problems.append(
                Problem(
                    file,
                    yaml_line(data, key, 1),
                    f"unknown top-level key `{key}`",
                    "a content file has only `items:` with a list of pieces under it",
                )
            )
        data = data["items"]
    if not isinstance(data, CommentedSeq):
        problems.append(
            Problem(
                file,
                1,
                "a content file must hold a list of pieces",
                "start it with `items:` and put each piece under it as `- id: ...`",
            )
        )
        return []
    items = []
    for index, raw in enumerate(data):
        line = yaml_line(data, index, 1)
        if not isinstance(raw, CommentedMap):
            problems.append(
                Problem(
                    file,
                    line,
                    f"piece {index + 1} is not a set of `key: value` lines",
                    "write each piece as `- id: ...` followed by kind, title, summary, "
                    "outcome and url, indented under it",
                )
            )
            continue
        item = _item(raw, file, line, problems)
        if item is not None:
            items.append(item)
    return items


def _item(raw: CommentedMap, file: str, line: int, problems: list[Problem]) -> ContentItem | None:
    """Validate one piece; None (and problems) when it is unusable."""
    return _ItemCheck(raw, file, line, problems).item()


class _ItemCheck:
    """Checks one content piece, collecting every problem before giving up on it."""

    def __init__(self, raw: CommentedMap, file: str, line: int, problems: list[Problem]) -> None:
        self.raw = raw
        self.file = file
        self.line = line
        self.problems = problems
        self.ok = True
        ident = raw.get("id")
        self.label = f"`{ident}`" if isinstance(ident, str) else f"at line {line}"

    def problem(self, line: int, message: str, fix: str) -> None:
        self.problems.append(Problem(self.file, line, message, fix))
        self.ok = False

    def at(self, key: str) -> int:
        return yaml_line(self.raw, key, self.line)

    def item(self) -> ContentItem | None:
        """The piece, or None when any check failed (every problem is recorded)."""
        self.keys()
        if not self.ok:
            return None
        raw = self.raw
        ident = str(raw["id"]).strip()
        if not _ID.match(ident):
            self.problem(
                self.at("id"),
                f"content id `{ident}` has characters that are not allowed",
                "use lowercase letters, digits, - and _, e.g. saas-churn-halved",
            )
        kind = str(raw["kind"]).strip()
        if kind not in KINDS:
            self.problem(
                self.at("kind"),
                f"`{kind}` is not a kind of content",
                f"{did_you_mean(kind, KINDS)}the kinds are {', '.join(KINDS)}",
            )
        url = str(raw["url"]).strip()
        if not _URL.match(url):
            self.problem(
                self.at("url"),
                f"`{url}` is not a web address",
                "write the full address starting with https://",
            )
        locale = self.locale()
        tags = self.tags()
        if kind == "testimonial":
            for key in ("quote", "author"):
                if not raw.get(key):
                    self.problem(
                        self.line,
                        f"testimonial {self.label} has no `{key}`",
                        f"add `{key}: ...` — a testimonial is the client's own words and name",
                    )
        if not self.ok:
            return None
        return ContentItem(
            id=ident,
            kind=kind,
            title=str(raw["title"]).strip(),
            summary=str(raw["summary"]).strip(),
            outcome=str(raw["outcome"]).strip(),
            url=url,
            tags=MappingProxyType(tags),
            locale=locale,
            extra=MappingProxyType({k: raw[k] for k in EXTRA_KEYS if raw.get(k) is not None}),
            file=self.file,
            line=self.line,
        )

    def keys(self) -> None:
        """Unknown keys, and required keys that are missing or not text."""
        for key in self.raw:
            if key not in REQUIRED and key not in OPTIONAL:
                self.problem(
                    self.at(key),
                    f"unknown key `{key}` in content piece {self.label}",
                    f"{did_you_mean(str(key), REQUIRED + OPTIONAL)}the keys are "
                    + ", ".join(REQUIRED + OPTIONAL),
                )
        for key in REQUIRED:
            value = self.raw.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                self.problem(
                    self.line,
                    f"content piece {self.label} has no `{key}`",
                    f"add `{key}: ...`"
                    + (" — the result the client got, in their words" if key == "outcome" else ""),
                )
            elif not isinstance(value, str | int | float) or isinstance(value, bool):
                self.problem(self.at(key), f"`{key}` must be text", f"write `{key}: some text`")

    def locale(self) -> str:
        if self.raw.get("locale") is None:
            return "en"
        found = normalize_locale(str(self.raw["locale"]))
        if found is None:
            self.problem(
                self.at("locale"),
                f"`{self.raw['locale']}` is not a language code",
                "write a code such as en, da, fi or da-DK",
            )
        return found or "en"

    def tags(self) -> dict[str, tuple[str, ...]]:
        raw_tags = self.raw.get("tags")
        if raw_tags is None:
            return {}
        if not isinstance(raw_tags, Mapping):
            self.problem(
                self.at("tags"),
                "`tags` must be a set of `key: values` lines",
                "write e.g. `tags: {industry: [saas], problem: [churn]}`",
            )
            return {}
        tags: dict[str, tuple[str, ...]] = {}
        for key, value in raw_tags.items():
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str | int | float) for v in values):
                self.problem(
                    self.at("tags"),
                    f"tag `{key}` must be a word or a list of words",
                    f"write e.g. `{key}: [saas, agency]`",
                )
                continue
            tags[str(key)] = tuple(sorted(_as_values(values)))
        return tags
