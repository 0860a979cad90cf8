"""Read and check the CRM mapping files marketing ops edit (``crm/<crm>.yaml``).

A mapping says which CRM event becomes which lead event type (``events``), and which
CRM properties are copied onto the lead (``fields``, ``attributes``). Files are read by
the one YAML reader (:mod:`worker.yamlfile`), checked by the pydantic models below, and
every mistake becomes a :class:`~worker.errors.Problem` with the file, the line and a
fix (with a did-you-mean for misspelled keys, lead fields, event types and CRMs).
``nurture validate`` reports them, and :class:`~worker.catalog.LiveCatalog` reloads
the mappings with the sequences and templates: a broken edit is refused and the last
good mapping stays in use.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from worker.errors import MappingError, Problem, did_you_mean
from worker.senders import OWNER_FIELDS
from worker.yamlfile import (
    describe_node,
    display_path,
    event_type_problem,
    node_line,
    path_line,
    plain,
    read_yaml,
)

CRMS = ("hubspot", "pipedrive")
LEAD_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "company",
    "locale",
    "timezone",
    "source",
    *OWNER_FIELDS,
)
ATTRIBUTE_TYPES = ("string", "number", "integer", "boolean")
DOCS = "see docs/http.md"
Scalar = str | int | float | bool


def scalar_text(value: Scalar) -> str:
    """A mapping value as the text CRM values are compared with (``800.0`` -> ``800``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _event_type(value: str) -> str:
    found = event_type_problem(value)
    if found is not None:
        raise ValueError("; ".join(found))
    return value


def _lead_field(value: str) -> str:
    if value not in LEAD_FIELDS:
        raise ValueError(
            f"{value!r} is not a lead field; {did_you_mean(value, LEAD_FIELDS)}use one of "
            f"{', '.join(LEAD_FIELDS)} (or map it under attributes)"
        )
    return value


class Rule(BaseModel):
    """One ``events:`` entry: which CRM event becomes which lead event type."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(min_length=1, description="CRM event name, e.g. contact.creation")
    type: Annotated[str, AfterValidator(_event_type)] = Field(
        description="lead event type, e.g. lead.created"
    )
    property: str | None = Field(default=None, description="CRM property the rule looks at")
    value: Scalar | list[Scalar] | None = Field(
        default=None, description="the property must have this value (or one of these)"
    )
    changed: bool = Field(default=False, description="Pipedrive: the property just changed")
    data: dict[str, Any] = Field(default_factory=dict, description="fixed event.data values")
    data_from: dict[str, str] = Field(
        default_factory=dict, description="event.data key -> CRM property"
    )

    @model_validator(mode="after")
    def _needs_property(self) -> Rule:
        if (self.value is not None or self.changed) and not self.property:
            raise ValueError("`value` and `changed` need a `property` to look at")
        return self

    def values(self) -> list[str] | None:
        """The accepted values, as lower-case text (None: any value)."""
        if self.value is None:
            return None
        items = self.value if isinstance(self.value, list) else [self.value]
        return [scalar_text(item).lower() for item in items]


class Attribute(BaseModel):
    """An ``attributes:`` entry: the attribute name and its type."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    type: Literal["string", "number", "integer", "boolean"] = "string"


class Mapping(BaseModel):
    """One CRM mapping file."""

    model_config = ConfigDict(extra="forbid")

    crm: Literal["hubspot", "pipedrive"]
    # HubSpot: properties a workflow payload names the contact by (first found wins).
    # Pipedrive: per object, the field holding the person id (person: id, deal: person_id).
    lead_id: list[str] | dict[str, str] = Field(default_factory=list)
    lead_id_prefix: str = Field(default="", max_length=50)
    events: list[Rule] = Field(min_length=1)
    fields: dict[str, Annotated[str, AfterValidator(_lead_field)]] = Field(default_factory=dict)
    # Short form `annualrevenue: budget` is read as `{name: budget}` (a string attribute).
    attributes: dict[str, Attribute] = Field(default_factory=dict)

    @field_validator("fields", "attributes", "lead_id", mode="before")
    @classmethod
    def _empty(cls, value: object) -> object:
        # A key with only comments under it reads as null: treat it as empty.
        return {} if value is None else value

    @field_validator("attributes", mode="before")
    @classmethod
    def _short_attributes(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: {"name": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("lead_id")
    @classmethod
    def _lead_id_shape(
        cls, value: list[str] | dict[str, str], info: ValidationInfo
    ) -> list[str] | dict[str, str]:
        crm = info.data.get("crm")
        if crm == "hubspot" and isinstance(value, dict) and value:
            raise ValueError(
                "for hubspot, lead_id is a list of property names; write e.g. "
                "`lead_id: [hs_object_id, objectId]`"
            )
        if crm == "pipedrive" and isinstance(value, list) and value:
            raise ValueError(
                "for pipedrive, lead_id maps each object to the field holding the person "
                "id; write e.g. `lead_id: {person: id, deal: person_id}`"
            )
        return value

    @model_validator(mode="after")
    def _default_lead_id(self) -> Mapping:
        if not self.lead_id and self.crm == "hubspot":
            self.lead_id = ["hs_object_id", "objectId", "vid", "id"]
        elif not self.lead_id:
            self.lead_id = {"person": "id", "deal": "person_id", "lead": "person_id"}
        return self

    def attribute(self, source: str) -> Attribute:
        """The attribute a CRM property is copied to."""
        return self.attributes[source]

    def maps(self, prop: str) -> bool:
        """True when a CRM property feeds a lead field, an attribute or event data."""
        if prop in self.fields or prop in self.attributes:
            return True
        return any(prop in rule.data_from.values() for rule in self.events)


# Keys allowed at each level of the file, for did-you-mean on an unknown key.
_KEYS = {
    "file": tuple(Mapping.model_fields),
    "events": tuple(Rule.model_fields),
    "attributes": tuple(Attribute.model_fields),
}


def read_mapping(path: Path, crm: str | None = None) -> tuple[Mapping | None, list[Problem]]:
    """Read and check one mapping file.

    Args:
        path: The file (``crm/hubspot.yaml``).
        crm: The CRM the file must be for (its name), or None for any.

    Returns:
        The mapping (None when there is any problem) and every problem found.
    """
    file = display_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, [
            Problem(
                file,
                0,
                "the mapping file does not exist",
                f"create it or set NURTURE_CRM_DIR; {DOCS}",
            )
        ]
    except OSError as exc:
        return None, [
            Problem(file, 0, f"cannot read the file: {exc.strerror}", "check its permissions")
        ]
    doc, problems = read_yaml(raw, file, DOCS)
    if problems:
        return None, problems
    if not isinstance(doc, dict):
        return None, [
            Problem(
                file,
                node_line(doc),
                "expected a mapping with crm, events, fields and attributes, not "
                + describe_node(doc),
                f"start the file with `crm: {crm or 'hubspot'}`, then `events:`; {DOCS}",
            )
        ]
    named = doc.get("crm")
    if crm is not None and named in CRMS and named != crm:
        # Checked first: the rest of the file was written for the other CRM.
        return None, [
            Problem(
                file,
                path_line(doc, ("crm",)),
                f"crm is {named!r}, but this is the file for {crm}",
                f"write `crm: {crm}`, or move the rules to crm/{named}.yaml",
            )
        ]
    try:
        mapping = Mapping.model_validate(plain(doc))
    except ValidationError as exc:
        return None, _problems(file, doc, exc)
    return mapping, []


def _problems(file: str, doc: Any, exc: ValidationError) -> list[Problem]:
    """Pydantic's errors as problems; a key missing because it was misspelled is
    reported once, as the misspelling (with its did-you-mean)."""
    errors = exc.errors()
    misspelled = {
        (tuple(e["loc"][:-1]), meant)
        for e in errors
        if e["type"] == "extra_forbidden"
        for meant in difflib.get_close_matches(str(e["loc"][-1]), _allowed(e["loc"]), n=1)
    }
    return [
        _problem(file, doc, e)
        for e in errors
        if not (e["type"] == "missing" and (tuple(e["loc"][:-1]), e["loc"][-1]) in misspelled)
    ]


def _allowed(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The keys allowed where ``loc`` points (a key of the file, a rule or an attribute)."""
    return _KEYS["file" if len(loc) == 1 else str(loc[0])]


def _problem(file: str, doc: Any, error: ErrorDetails) -> Problem:
    """One pydantic error as a problem at the line of the key it is about."""
    loc = tuple(error["loc"])
    line = path_line(doc, loc)
    where = ".".join(str(part) for part in loc) or "the file"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed(loc)
        key = str(loc[-1])
        return Problem(
            file,
            line,
            f"unknown key `{key}`"
            + (f" in {'.'.join(map(str, loc[:-1]))}" if len(loc) > 1 else ""),
            f"{did_you_mean(key, allowed)}keys allowed here: {', '.join(allowed)}",
        )
    if kind == "missing":
        return Problem(file, line, f"`{loc[-1]}` is missing", f"add `{loc[-1]}:`; {DOCS}")
    if kind == "too_short" and loc == ("events",):
        return Problem(
            file,
            line,
            "`events` is empty, so no CRM event would become a lead event",
            "add a rule, e.g. `- {event: contact.creation, type: lead.created}`; " + DOCS,
        )
    message = error["msg"].removeprefix("Value error, ")
    if kind == "literal_error" and loc[-1] in ("crm", "type"):
        choices = CRMS if loc[-1] == "crm" else ATTRIBUTE_TYPES
        hint = did_you_mean(str(error["input"]), choices)
        return Problem(file, line, f"{where}: {message}", f"{hint}{DOCS}")
    message, _, fix = message.partition("; ")
    return Problem(file, line, f"{where}: {message}", fix or DOCS)


def load_mapping(path: Path, crm: str | None = None) -> Mapping:
    """Read and check one mapping file.

    Raises:
        MappingError: Listing every problem (file, line, fix).
    """
    mapping, problems = read_mapping(path, crm)
    if mapping is None:
        raise MappingError(problems)
    return mapping


def load_mappings(
    crm_dir: Path, crms: Iterable[str] = CRMS
) -> tuple[dict[str, Mapping], list[Problem]]:
    """Every mapping file present in ``crm_dir`` (a CRM without a file has no adapter).

    Returns:
        The valid mappings by CRM name, and the problems of the others.
    """
    mappings: dict[str, Mapping] = {}
    problems: list[Problem] = []
    for crm in crms:
        path = crm_dir / f"{crm}.yaml"
        if not path.exists():
            continue
        mapping, found = read_mapping(path, crm)
        problems.extend(found)
        if mapping is not None:
            mappings[crm] = mapping
    return mappings, problems


def check_mappings(crm_dir: Path) -> list[Problem]:
    """Problems in every mapping file present in ``crm_dir`` (for ``nurture validate``)."""
    return load_mappings(crm_dir)[1]
