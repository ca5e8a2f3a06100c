"""Warnings the mailing editor shows while a mailing is written (docs/ARCHITECTURE.md).

They do not stop a save: an unknown merge field renders as blank, which may be intended, and a
body without an unsubscribe link can still be saved as a draft (sending refuses it, see
app.services.mailings). The rules themselves are pure functions in app.services.rendering; this
module adds what only the database knows: which custom fields contacts have.
"""

from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import Contact
from app.services.rendering import (
    STANDARD_VARS,
    UNSUBSCRIBE_HINT,
    TemplateProblem,
    bodies_without_unsubscribe,
    template_variables,
    unknown_variables,
)

# Merge fields a writer types; `fields` (the mapping of all custom fields) is left out of the hint.
SHOWN_STANDARD = [v for v in STANDARD_VARS if v != "fields"]


def custom_field_names(sample: int = 200, limit: int = 30) -> list[str]:
    """Custom field names seen on the most recent contacts, for hints."""
    keys: set[str] = set()
    for fields in db.session.execute(
        select(Contact.fields).order_by(Contact.id.desc()).limit(sample)
    ).scalars():
        keys.update(k for k in (fields or {}) if isinstance(k, str) and k.isidentifier())
    return sorted(keys)[:limit]


def fields_on_contacts(names: set[str]) -> set[str]:
    """Which of `names` at least one contact has as a custom field (one query per name)."""
    found = set()
    for name in sorted(names)[:50]:
        hit = db.session.execute(
            select(Contact.id).where(Contact.fields[name].as_string().is_not(None)).limit(1)
        ).first()
        if hit is not None:
            found.add(name)
    return found


def editor_warnings(subject: str, html_body: str, text_body: str) -> list[str]:
    """What the editor warns about: bodies without an unsubscribe link, merge fields no contact
    has. A template that does not compile gives no warning here (saving reports it)."""
    warnings: list[str] = []
    try:
        lacking = bodies_without_unsubscribe(html_body or "", text_body or "")
    except TemplateProblem:
        lacking = []
    if lacking and (html_body or text_body):
        parts = " and the ".join(lacking)
        warnings.append(f"The {parts} {'have' if len(lacking) > 1 else 'has'} no unsubscribe"
                        f" link, so the mailing cannot be sent or scheduled. {UNSUBSCRIBE_HINT}")
    sources = [subject or "", html_body or "", text_body or ""]
    candidates: set[str] = set()
    for source in sources:
        try:
            candidates |= template_variables(source)
        except TemplateProblem:
            continue
    candidates -= set(STANDARD_VARS)
    if candidates:
        present = fields_on_contacts(candidates)
        unknown = unknown_variables(sources, present)
        if unknown:
            known = [*SHOWN_STANDARD, *sorted(set(custom_field_names()) | present)]
            names = ", ".join("{{ %s }}" % name for name in unknown)  # noqa: UP031
            many = len(unknown) > 1
            warnings.append(
                f"Unknown merge field{'s' if many else ''} {names}: no contact has"
                f" {'them' if many else 'it'}, so {'they render' if many else 'it renders'} as"
                f" blank. Fields that exist: {', '.join(known)}.")
    return warnings
