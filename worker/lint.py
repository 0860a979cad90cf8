"""``nurture validate``'s warnings: what loads fine but silently changes what is sent.

The errors of :func:`worker.catalog.load_and_check` stop a catalog from loading; these
do not (some are judgement calls, such as placeholder links), so a live edit is never
refused for them. ``nurture validate`` prints them with file:line and the fix, and
``nurture validate --strict`` fails on them (for CI).

Checked: YAML values read otherwise than written; folder and locale names that are
not languages; files that will be ignored and templates no step sends; links that
cannot work; merge tags of other tools; timing that is surely a mistake (a later
step without a wait); two sequences sending to one lead on the same day from one
event; subjects over 60 characters; partial translations.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.tokens import (
    BlockEntryToken,
    FlowEntryToken,
    FlowSequenceStartToken,
    ScalarToken,
    ValueToken,
)

from worker.catalog import LoadedCatalog
from worker.content import ContentLibrary
from worker.errors import Problem, RenderError, did_you_mean
from worker.rendering.renderer import LAYOUT, is_locale_dir
from worker.sequences.model import Catalog, Sequence
from worker.yamlfile import display_path

#: ISO 639-1 language codes: a locale folder or ``locale:`` must start with one.
_LANGUAGE_CODES = (
    "aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu "
    "cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he "
    "hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko "
    "kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd "
    "ne ng nl nn no nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg "
    "si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug "
    "uk ur uz ve vi vo wa wo xh yi yo za zh zu "
)
LANGUAGES = frozenset(_LANGUAGE_CODES.split())
#: Country codes written where a language was meant.
COUNTRY_NOT_LANGUAGE = {
    "dk": "da", "se": "sv", "gr": "el", "jp": "ja", "cz": "cs", "ua": "uk", "cn": "zh",
    "kr": "ko", "ee": "et", "si": "sl", "rs": "sr", "by": "be", "gb": "en", "us": "en",
    "at": "de", "ch": "de", "dk-DK": "da-DK", "se-SE": "sv-SE",
}  # fmt: skip
SUBJECT_MAX = 60
_BOOLEAN_WORDS = re.compile(r"^(yes|no|on|off|y|n)$", re.IGNORECASE)
_SEXAGESIMAL = re.compile(r"^\d+(:[0-5]?\d)+$")
_LEADING_ZERO = re.compile(r"^0\d+$")
_MERGE_TAGS = (
    (re.compile(r"\*\|[A-Za-z0-9_:]+\|\*"), "a Mailchimp merge tag"),
    (re.compile(r"%%[A-Za-z0-9_ ]+%%"), "a Salesforce Marketing Cloud / Pardot merge tag"),
    (re.compile(r"\{\{\s*(contact|company|deal|owner)\.[A-Za-z0-9_]+"), "a HubSpot token"),
    (re.compile(r"\[(FirstName|First Name|firstname|Name|Company)\]"), "a placeholder"),
)
_FIELD_FOR = {"firstname": "lead | first_name('there')", "fname": "lead | first_name('there')"}
_URL = re.compile(r"""(?:href\s*=\s*["']?|\b)((?:https?://|www\.)[^\s"'<>)\]]+)""")
_LOCAL_HOST = re.compile(
    r"^(localhost|127\.\d+\.\d+\.\d+|0\.0\.0\.0|\[::1\]|[^./]+\.(local|internal|localhost))"
    r"(:\d+)?$",
    re.IGNORECASE,
)
_PLACEHOLDER_HOST = re.compile(r"^(www\.)?example\.(com|org|net)$|\.example$", re.IGNORECASE)


@dataclass(frozen=True)
class Folders:
    """The folders whose files are checked."""

    sequences: Path
    templates: Path
    content: Path
    crm: Path


def lint(
    folders: Folders, catalog: Catalog, content: ContentLibrary, subjects: dict[str, str]
) -> list[Problem]:
    """Every warning, sorted by file and line.

    Args:
        folders: Where the files are.
        catalog: The loaded sequences.
        content: The loaded content library.
        subjects: Template file (as displayed) -> a rendered subject, for the length check.
    """
    found: list[Problem] = []
    for folder in (folders.sequences, folders.content, folders.crm):
        for path in _files(folder, (".yaml", ".yml")):
            found += yaml_values(path)
    found += ignored_files(folders)
    found += language_names(folders.templates, content)
    found += unused_templates(folders.templates, catalog)
    for path in _files(folders.templates, (".j2",)):
        text = path.read_text(encoding="utf-8", errors="replace")
        found += links(path, text) + merge_tags(path, text)
    for path in _files(folders.content, (".yaml", ".yml")):
        text = path.read_text(encoding="utf-8", errors="replace")
        found += _placeholders_once(links(path, text)) + merge_tags(path, text)
    found += timing(catalog)
    found += same_day(catalog)
    found += translations(folders.templates, catalog, content)
    for file, subject in subjects.items():
        if len(subject) > SUBJECT_MAX:
            found.append(
                Problem(
                    file,
                    0,
                    f"the subject is {len(subject)} characters ({subject!r}); phones and "
                    f"inboxes cut it after about {SUBJECT_MAX}",
                    f"shorten it to {SUBJECT_MAX} characters or fewer",
                )
            )
    return sorted(set(found), key=lambda p: (p.file, p.line, p.message))


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)


def rendered_subjects(loaded: LoadedCatalog, templates: Path) -> dict[str, str]:
    """Template file (as displayed) -> its longest subject over the sample leads."""
    from worker.rendering.check import _scenarios

    reasons = sorted({str(rule.reason) for rule in loaded.catalog.fit_rules})
    folders = sorted(p.name for p in templates.iterdir() if p.is_dir() and is_locale_dir(p.name))
    locales: list[str | None] = [None, *folders]
    subjects: dict[str, str] = {}
    for sequence in loaded.catalog.sequences.values():
        for step in sequence.steps:
            if step.webhook is not None:
                continue  # no email
            for locale in locales:
                try:
                    path = loaded.renderer.resolve(step.template, locale)
                except RenderError:
                    continue
                shown = display_path(path)
                for context, received in list(
                    _scenarios(sequence, step, locale, reasons, frozenset())
                )[:2]:
                    try:
                        email = loaded.renderer.render(
                            step.template,
                            locale,
                            context,
                            received,
                            internal=step.notify is not None,
                        )
                    except RenderError:
                        continue  # the checks of load_and_check report it
                    if len(email.subject) > len(subjects.get(shown, "")):
                        subjects[shown] = email.subject
    return subjects


# ------------------------------------------------------------------ YAML values


def yaml_values(path: Path) -> list[Problem]:
    """Unquoted values YAML reads otherwise than they look (yes, 09:00, 010)."""
    try:
        tokens = list(YAML(typ="rt").scan(path.read_text(encoding="utf-8")))
    except (YAMLError, UnicodeDecodeError, OSError):
        return []  # the loader reports files that do not parse
    shown, found = display_path(path), []
    value_starts = (ValueToken, BlockEntryToken, FlowEntryToken, FlowSequenceStartToken)
    for before, token in itertools.pairwise(tokens):
        if not isinstance(token, ScalarToken) or not token.plain:
            continue
        if not isinstance(before, value_starts):
            continue  # a key, not a value
        text, line = str(token.value), token.start_mark.line + 1
        problem = _read_otherwise(text)
        if problem:
            found.append(Problem(shown, line, *problem))
    return found


def _read_otherwise(text: str) -> tuple[str, str] | None:
    if _BOOLEAN_WORDS.match(text):
        truth = "true" if text.lower() in ("yes", "on", "y") else "false"
        return (
            f"`{text}` is read as the text {text!r}, not as {truth} (YAML 1.2; older tools "
            "read it as a yes/no)",
            f'write {truth} for a yes/no, or put the word in quotes: "{text}"',
        )
    if _SEXAGESIMAL.match(text):
        minutes = 0
        for part in text.split(":"):
            minutes = minutes * 60 + int(part)
        return (
            f"`{text}` is read as text here but as the number {minutes} by YAML 1.1 tools "
            "(base 60)",
            f'put it in quotes: "{text}"',
        )
    if _LEADING_ZERO.match(text):
        return (
            f"`{text}` is read as the number {int(text)}: the leading zero is lost",
            f'put it in quotes to keep it as written: "{text}"',
        )
    return None


# ------------------------------------------------------------------ files and names


def ignored_files(folders: Folders) -> list[Problem]:
    """Files in the folders that nothing reads."""
    found = []
    for folder, suffixes, what in (
        (folders.sequences, (".yaml", ".yml"), "sequence files end in .yaml"),
        (folders.content, (".yaml", ".yml"), "content files end in .yaml"),
        (folders.crm, (".yaml", ".yml"), "CRM mappings end in .yaml"),
        (folders.templates, (".j2",), "templates end in .j2"),
    ):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.suffix in suffixes or path.name.startswith("."):
                continue
            if path.name.lower() in ("readme.md", "readme", "readme.txt"):
                continue
            stem = path.name.split(".")[0]
            found.append(
                Problem(
                    display_path(path),
                    0,
                    "this file is never read",
                    f"{what}: rename it to {stem}{suffixes[0]} if it should be used, "
                    "or move it out of the folder",
                )
            )
    return found


def _language_problem(name: str) -> tuple[str, str] | None:
    language = name.split("-")[0].lower()
    if language in LANGUAGES:
        return None
    meant = COUNTRY_NOT_LANGUAGE.get(name) or COUNTRY_NOT_LANGUAGE.get(language)
    fix = (
        f"`{name}` is a country code; the language is `{meant}`"
        if meant
        else f"{did_you_mean(language, sorted(LANGUAGES))}use an ISO 639-1 language code "
        "(da, fi, en, sv, ...), optionally with a region (da-DK)"
    )
    return f"`{name}` is not a language, so no lead's locale ever picks it", fix


def language_names(templates: Path, content: ContentLibrary) -> list[Problem]:
    """Locale folders under templates/ and content ``locale:`` values that are no language."""
    found = []
    if templates.is_dir():
        for folder in sorted(p for p in templates.iterdir() if p.is_dir()):
            if is_locale_dir(folder.name):
                problem = _language_problem(folder.name)
                if problem:
                    found.append(Problem(display_path(folder), 0, *problem))
    for item in content.items:
        problem = _language_problem(item.locale)
        if problem:
            found.append(Problem(item.file, item.line, f"locale {problem[0]}", problem[1]))
    return found


def _template_files(templates: Path) -> Iterator[tuple[Path, str | None, str]]:
    """(path, locale folder or None, email name) of every email template."""
    for path in _files(templates, (".j2",)):
        parts = path.relative_to(templates).with_suffix("").parts
        if any(part.startswith("_") for part in parts):
            continue
        if len(parts) > 1 and is_locale_dir(parts[0]):
            yield path, parts[0], "/".join(parts[1:])
        else:
            yield path, None, "/".join(parts)


def _used(catalog: Catalog) -> set[str]:
    return {step.template for s in catalog.sequences.values() for step in s.steps if step.template}


def unused_templates(templates: Path, catalog: Catalog) -> list[Problem]:
    """Templates no step sends (drafts are allowed; said once so nobody edits in vain)."""
    used = _used(catalog)
    return [
        Problem(
            display_path(path),
            0,
            "no sequence step sends this template, so edits to it change nothing",
            f"name it in a step (`template: {name}`), or start its name with _ if it is "
            "a piece to {% include %}",
        )
        for path, _locale, name in _template_files(templates)
        if name not in used
    ]


# ------------------------------------------------------------------ links and tags


def links(path: Path, text: str) -> list[Problem]:
    """Links that cannot work for a reader: local hosts, placeholders, no scheme, http."""
    found, shown = [], display_path(path)
    for number, line in enumerate(text.splitlines(), 1):
        for match in _URL.finditer(line):
            url = match.group(1).rstrip(".,;:")
            if re.search(r"xmlns(:\w+)?\s*=\s*[\"']$", line[: match.start(1)]):
                continue  # an XML namespace name, never opened
            if "{{" in url or "{%" in url:
                continue
            problem = _link_problem(url)
            if problem:
                found.append(Problem(shown, number, *problem))
    return found


def _link_problem(url: str) -> tuple[str, str] | None:
    if url.startswith("www."):
        return (
            f"the link {url} has no https://, so many email programs do not make it clickable",
            f"write https://{url}",
        )
    host = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    if _LOCAL_HOST.match(host):
        return (
            f"the link {url} points to this computer or network; readers cannot open it",
            "use the public address of the page",
        )
    if _PLACEHOLDER_HOST.search(host.split(":")[0]):
        return (
            f"the link {url} is a placeholder (example.com)",
            "replace it with the address of your own page",
        )
    if url.startswith("http://"):
        return (
            f"the link {url} is not https; browsers warn and some mail filters mark it",
            f"write https://{url.removeprefix('http://')}",
        )
    return None


def _placeholders_once(problems: list[Problem]) -> list[Problem]:
    """Placeholder links of one content file as one warning (the shipped library is full
    of them on purpose), other link problems one by one."""
    placeholders = [p for p in problems if "placeholder" in p.message]
    rest = [p for p in problems if "placeholder" not in p.message]
    if placeholders:
        first = placeholders[0]
        rest.append(
            Problem(
                first.file,
                first.line,
                f"{len(placeholders)} link(s) in this file are placeholders (example.com), "
                f"the first here",
                "replace them with the addresses of your own pages before sending",
            )
        )
    return rest


def merge_tags(path: Path, text: str) -> list[Problem]:
    """Merge tags of other tools, which would be sent as written."""
    found, shown = [], display_path(path)
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in _MERGE_TAGS:
            for match in pattern.finditer(line):
                tag = match.group(0)
                word = re.sub(r"[^a-z]", "", tag.lower().split(".")[-1])
                instead = _FIELD_FOR.get(word, "lead.first_name, lead.company, ...")
                found.append(
                    Problem(
                        shown,
                        number,
                        f"`{tag}` is {what}; this worker sends it as written",
                        f"write {{{{ {instead} }}}} instead (see docs/templates.md)",
                    )
                )
    return found


# ------------------------------------------------------------------ timing


def _seconds(sequence: Sequence, index: int) -> float:
    wait = sequence.steps[index].wait
    per = {"s": 1, "m": 60, "h": 3600, "d": 86400, "business_days": 86400}
    return float(wait.amount) * per.get(str(wait.unit), 86400)


def timing(catalog: Catalog) -> list[Problem]:
    """A later step with no wait: two emails at once (an empty send window is an
    error of the loader already)."""
    found = []
    for sequence in catalog.sequences.values():
        for index, step in enumerate(sequence.steps):
            if step.channel != "email":
                continue  # notify and webhook steps reach people inside, not the lead
            if index and _seconds(sequence, index) == 0 and step.wait.upper in (None, 0):
                found.append(
                    Problem(
                        sequence.file,
                        step.line,
                        f"step {index + 1} (`{step.id}`) waits 0 after the previous step, so "
                        "the lead gets two emails at once (the frequency cap then moves it)",
                        "give it a wait, e.g. `wait: 3 business_days`",
                    )
                )
    return found


def same_day(catalog: Catalog) -> list[Problem]:
    """Two nurture sequences whose triggers can both take one lead on one event, both
    sending within a day: the lead gets two first emails at once."""
    found = []
    nurture = [s for s in catalog.sequences.values() if s.kind == "nurture" and s.steps]
    for a_index, a in enumerate(sorted(nurture, key=lambda s: s.id)):
        for b in sorted(nurture, key=lambda s: s.id)[a_index + 1 :]:
            if a.trigger_event != b.trigger_event:
                continue
            if _seconds(a, 0) >= 86400 or _seconds(b, 0) >= 86400:
                continue
            if not _can_both_match(a, b):
                continue
            found.append(
                Problem(
                    b.file,
                    b.line,
                    f"`{b.id}` and `{a.id}` ({a.file}) both start on {a.trigger_event} for "
                    "the same lead and both send within a day",
                    "make their trigger `when`s exclusive (e.g. by source), or let one wait longer",
                )
            )
    return found


def _can_both_match(a: Sequence, b: Sequence) -> bool:
    """Whether some lead built from either trigger's sample values matches both."""
    from worker.sequences import condition_context

    samples: list[dict[str, Any]] = [{}]
    for sequence in (a, b):
        if sequence.trigger_when is not None:
            samples.append(sequence.trigger_when.guaranteed())
    samples.append({**samples[-1], **(samples[1] if len(samples) > 2 else {})})
    for sample in samples:
        lead: dict[str, Any] = {"attributes": {}}
        data: dict[str, Any] = {}
        for path, value in sample.items():
            head, _, rest = path.partition(".")
            if head == "data":
                data[rest] = value
            elif head == "attributes":
                lead["attributes"][rest] = value
            else:
                lead[path] = value
        ctx = condition_context(lead, data)
        if all(s.trigger_when is None or s.trigger_when.matches(ctx) for s in (a, b)):
            return True
    return False


# ------------------------------------------------------------------ languages


def translations(templates: Path, catalog: Catalog, content: ContentLibrary) -> list[Problem]:
    """Per locale folder: the sent emails it lacks, a missing footer, and content kinds
    the emails ask for with no piece in that language. ``notify:`` emails go to people
    inside the company, in the default language, and are left out."""
    used = {
        step.template
        for sequence in catalog.sequences.values()
        for step in sequence.steps
        if step.channel == "email"
    }
    by_locale: dict[str, set[str]] = {}
    for _path, locale, name in _template_files(templates):
        if locale is not None:
            by_locale.setdefault(locale, set()).add(name)
    found = []
    for locale, names in sorted(by_locale.items()):
        folder = display_path(templates / locale)
        missing = sorted(used - names)
        if missing:
            found.append(
                Problem(
                    folder,
                    0,
                    f"a partial translation: {len(used) - len(missing)} of {len(used)} emails "
                    f"sent are in `{locale}`; leads with this locale get "
                    f"{', '.join(missing)} in the fallback language",
                    f"add {', '.join(f'{locale}/{m}.j2' for m in missing)}",
                )
            )
        if not (templates / locale / f"{LAYOUT}.j2").is_file():
            found.append(
                Problem(
                    folder,
                    0,
                    f"`{locale}` emails get the fallback language's footer, so they mix languages",
                    f"add {locale}/{LAYOUT}.j2 with the footer in this language",
                )
            )
        found += _content_gaps(templates, locale, names & used, content)
    return found


def _content_gaps(
    templates: Path, locale: str, names: Iterable[str], content: ContentLibrary
) -> list[Problem]:
    language = locale.split("-")[0].lower()
    have = {i.kind for i in content.items if i.locale.split("-")[0].lower() == language}
    found = []
    for name in sorted(names):
        path = templates / locale / f"{name}.j2"
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for kind in re.findall(r"content\(\s*[\"']([a-z_]+)[\"']", line):
                if kind not in have:
                    found.append(
                        Problem(
                            display_path(path),
                            number,
                            f"content('{kind}') has no `{locale}` piece, so this email always "
                            "uses its {% else %} text",
                            f"add {kind} pieces with `locale: {locale}` to content/",
                        )
                    )
    return found
