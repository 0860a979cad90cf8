"""Everything marketing ops edit, loaded and checked together: sequences, fit rules,
the content library, the templates and the CRM mappings. The worker and the HTTP
service run only a catalog that passed ``nurture validate``; a live edit that fails is
refused and the last good one runs on.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from worker.content import ContentLibrary
from worker.crm.mapping import CRMS, load_mappings
from worker.crm.mapping import Mapping as CrmMapping
from worker.errors import CatalogError, MappingError, NurtureError, Problem
from worker.reach import check_notify_locales
from worker.rendering import Renderer
from worker.rendering.check import check_templates
from worker.sequences import Catalog, Sequence, Step, load_catalog
from worker.settings import Settings
from worker.webhooks import check_webhooks
from worker.yamlfile import display_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedCatalog:
    """A checked catalog with the renderer for its templates.

    Attributes:
        catalog: The sequences and fit rules.
        content: The content library.
        renderer: Renders the templates.
        fingerprint: Names, sizes and times of the files it was loaded from.
        mappings: The CRM mappings by CRM name (a CRM without a file has none).
        crm_dir: Where the CRM mappings are (to name the missing file).
    """

    catalog: Catalog
    content: ContentLibrary
    renderer: Renderer
    fingerprint: str
    mappings: dict[str, CrmMapping] = field(default_factory=dict)
    crm_dir: Path = Path("crm")
    crm_fingerprint: str = ""

    def mapping(self, crm: str) -> CrmMapping:
        """The mapping of ``crm``.

        Raises:
            MappingError: Naming the file when there is no mapping for it.
        """
        found = self.mappings.get(crm)
        if found is None:
            file = display_path(self.crm_dir / f"{crm}.yaml")
            raise MappingError(
                [
                    Problem(
                        file,
                        0,
                        "the mapping file does not exist",
                        "create it (copy it from the shipped crm/ folder) or set "
                        "NURTURE_CRM_DIR; see docs/http.md",
                    )
                ]
            )
        return found

    def sequence(self, sequence_id: str) -> Sequence:
        """The sequence an operator named (``nurture preview``, ``send-test``).

        Raises:
            NurtureError: Listing the sequences there are, when there is no such one.
        """
        sequence = self.catalog.sequences.get(sequence_id)
        if sequence is None:
            known = ", ".join(sorted(self.catalog.sequences))
            raise NurtureError(f"no sequence {sequence_id!r}; the sequences are: {known}")
        return sequence

    @staticmethod
    def step(sequence: Sequence, step_id: str) -> Step:
        """The step of ``sequence`` an operator named.

        Raises:
            NurtureError: Listing the sequence's steps, when there is no such one.
        """
        step = sequence.step(step_id)
        if step is None:
            known = ", ".join(s.id for s in sequence.steps)
            raise NurtureError(f"no step {step_id!r} in {sequence.id}; its steps are: {known}")
        return step


def fingerprint(settings: Settings) -> str:
    """A cheap digest of every file's name, size and mtime (to notice edits)."""
    return _digest(
        (settings.sequences_dir, settings.templates_dir, settings.content_dir, settings.crm_dir)
    )


def _digest(directories: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for directory in directories:
        if not directory.exists():
            digest.update(f"missing:{directory}".encode())
            continue
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_and_check(settings: Settings) -> tuple[LoadedCatalog | None, list[Problem]]:
    """Load and cross-check everything; the catalog is None when any problem was found."""
    print_ = fingerprint(settings)
    problems: list[Problem] = []
    if not settings.sequences_dir.is_dir():
        problems.append(
            Problem(
                str(settings.sequences_dir),
                0,
                "the sequences folder does not exist",
                "create it or set NURTURE_SEQUENCES_DIR to the folder with your *.yaml files",
            )
        )
        return None, problems
    catalog, found = load_catalog(settings.sequences_dir)
    problems.extend(found)
    if settings.content_dir.is_dir():
        content, found = ContentLibrary.load(settings.content_dir, settings.default_locale)
        problems.extend(found)
    else:
        content = ContentLibrary([], settings.default_locale)
    problems.extend(check_templates(catalog, settings.templates_dir, content))
    mappings, found = load_mappings(settings.crm_dir, CRMS)
    problems.extend(found)
    secret = bool(settings.webhook_secret and settings.webhook_secret.get_secret_value())
    problems.extend(check_webhooks(catalog, secret, settings.webhook_targets))
    problems.extend(
        check_notify_locales(
            catalog, settings.templates_dir, settings.default_locale, settings.notify_locale
        )
    )
    if problems:
        return None, sorted(set(problems))
    renderer = Renderer(settings.templates_dir, settings.default_locale, content)
    crm_print = _digest((settings.crm_dir,))
    return LoadedCatalog(
        catalog, content, renderer, print_, mappings, settings.crm_dir, crm_print
    ), []


class LiveCatalog:
    """The catalog in force, reloaded when its files change (if the edit validates)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        loaded, problems = load_and_check(settings)
        if loaded is None:
            raise CatalogError(problems)
        self._current = loaded
        self._lock = threading.Lock()
        self.last_problems: list[Problem] = []
        self._refused = ""

    @property
    def current(self) -> LoadedCatalog:
        return self._current

    def reload_if_changed(self) -> bool:
        """Reload when files changed; True if a new catalog is now in force."""
        with self._lock:
            now_print = fingerprint(self._settings)
            if now_print in (self._current.fingerprint, self._refused):
                return False
            loaded, problems = load_and_check(self._settings)
            if loaded is None:
                self._refused = now_print
                if problems != self.last_problems:
                    log.error(
                        "edit refused, the last good sequences keep running:\n%s",
                        "\n".join(str(p) for p in problems),
                    )
                self.last_problems = problems
                return False
            self.last_problems = []
            self._current = loaded
            log.info(
                "reloaded sequences, templates, content and CRM mappings (version %s)",
                loaded.catalog.version,
            )
            return True

    def mapping(self, crm: str) -> CrmMapping:
        """The mapping of ``crm`` in force, after picking up edits (for the HTTP adapters).

        Raises:
            MappingError: Naming the file when there is no mapping for ``crm``.
        """
        # Only the crm/ folder is looked at here (a few stat calls, on every webhook);
        # a change there reloads the whole catalog, so mappings are checked like the rest.
        if _digest((self._settings.crm_dir,)) != self._current.crm_fingerprint:
            self.reload_if_changed()
        return self.current.mapping(crm)
