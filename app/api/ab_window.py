"""A mailing's A/B subject test and send window in the API: the models and their storage.

The rules are the dashboard's: every check is app.domain.variants / app.domain.windows, called
from the models' validators so that a refusal names its field (``ab_test.share``,
``send_window.start``), and the setup is stored by the editor's own services
(app.services.ab_tests.save_setup, app.services.windows.save_setup). A variant's figures are
app.services.ab_tests.page_facts's, the numbers the mailing page shows. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.api.problems import invalid
from app.api.types import Name, Text
from app.domain import variants as ab_rules
from app.domain import windows as window_rules
from app.extensions import db
from app.models import Mailing, MailingVariant
from app.services import ab_tests, windows
from app.services.rendering import TemplateProblem, check_template

# The other values of a setup while one field is checked on its own: each valid by the rules.
_NEUTRAL: dict[str, Any] = {"variant_count": ab_rules.MIN_VARIANTS, "share": 100,
                            "wait_minutes": 0, "metric": ab_rules.METRICS[0]}


def _check_setup(**given: Any) -> None:
    """app.domain.variants.check_setup with one value given (VariantError is a ValueError: the
    validator's field is named in the 422)."""
    ab_rules.check_setup(**{**_NEUTRAL, **given})


# ---------------------------------------------------------------- in


def _filled(value: str) -> str:
    if not value:
        raise ValueError("must not be blank")
    return value


class AbVariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[Text, StringConstraints(strip_whitespace=True, max_length=500),
                       AfterValidator(_filled)] = Field(
        description="This variant's subject (a template, like the mailing's)")
    from_name: Name = Field("", description="Its from-name; blank for the mailing's own")


class AbTestIn(BaseModel):
    """An A/B test of subjects (and from-names); it replaces any test set before."""

    model_config = ConfigDict(extra="forbid")

    variants: list[AbVariantIn] = Field(
        max_length=100, description=f"{ab_rules.MIN_VARIANTS} to {ab_rules.MAX_VARIANTS} variants, "
                                    "A first")
    share: int = Field(strict=True, description="Percent of the eligible audience that tests (1-100); the "
                                   "rest gets the winner")
    metric: Annotated[str, StringConstraints(max_length=10)] = Field(
        "open", description="The winner is the best human open or click rate",
        json_schema_extra={"enum": list(ab_rules.METRICS)})
    wait_minutes: int = Field(strict=True, description="Minutes after the last test message before the winner "
                                          "is chosen (0 to 30 days)")

    @field_validator("variants")
    @classmethod
    def _variant_count(cls, value: list[AbVariantIn]) -> list[AbVariantIn]:
        _check_setup(variant_count=len(value))
        return value

    @field_validator("share", "metric", "wait_minutes")
    @classmethod
    def _setting(cls, value: Any, info: ValidationInfo) -> Any:
        _check_setup(**{str(info.field_name): value})
        return value


def _day_names(days: int) -> list[str]:
    return [name for i, name in enumerate(window_rules.DAY_NAMES) if days & (1 << i)]


def _day_index(name: str) -> int:
    for i, known in enumerate(window_rules.DAY_NAMES):
        if name.strip().lower() == known.lower():
            return i
    raise ValueError(f"{name[:20]!r} is not a day; use {', '.join(window_rules.DAY_NAMES)}")


class SendWindowIn(BaseModel):
    """When the mailing may be handed over, in the organisation's zone, and whether each contact
    gets it at the send time's clock in their own zone. Without start and end: no window."""

    model_config = ConfigDict(extra="forbid")

    start: Annotated[str, StringConstraints(max_length=20)] | None = Field(
        None, description="HH:MM, the window opens (organisation's zone)", examples=["08:00"])
    end: Annotated[str, StringConstraints(max_length=20)] | None = Field(
        None, description="HH:MM, it closes (24:00 allowed; at or before start: past midnight)",
        examples=["20:00"])
    days: list[Annotated[str, StringConstraints(max_length=20)]] = Field(
        default_factory=lambda: list(window_rules.DAY_NAMES), max_length=7,
        description="The days the window opens on: " + ", ".join(window_rules.DAY_NAMES))
    local_delivery: bool = Field(False, description="Each contact at the send time's clock in "
                                                    "their own zone")

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        return None if value is None else window_rules.hhmm(window_rules.parse_hhmm(value))

    @field_validator("end")
    @classmethod
    def _end(cls, value: str | None) -> str | None:
        return None if value is None else window_rules.hhmm(window_rules.parse_hhmm(value, end=True))

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        indexes = sorted({_day_index(name) for name in value})
        mask = sum(1 << i for i in indexes)
        window_rules.Window(0, window_rules.DAY_MINUTES, mask)  # at least one day
        return [window_rules.DAY_NAMES[i] for i in indexes]

    @model_validator(mode="after")
    def _window(self) -> SendWindowIn:
        if (self.start is None) != (self.end is None):
            raise ValueError("give the window's start and end, or neither (no window)")
        if self.start is not None and self.end is not None:
            window_rules.Window(window_rules.parse_hhmm(self.start),
                                window_rules.parse_hhmm(self.end, end=True), self.mask)
        return self

    @property
    def mask(self) -> int:
        return sum(1 << window_rules.DAY_NAMES.index(name) for name in self.days)


# ---------------------------------------------------------------- storing


def store_ab_test(mailing: Mailing, ab_test: AbTestIn | None) -> None:
    """Store (or with None remove) the test through the editor's service; not committed."""
    form: dict[str, Any] = {}
    if ab_test is not None:
        for n, variant in enumerate(ab_test.variants):
            try:
                check_template(variant.subject, f"Variant {ab_rules.letter(n)} subject")
            except TemplateProblem as exc:
                raise invalid(f"ab_test.variants.{n}.subject",
                              f"the template cannot be used: {exc}") from None
            form[f"variant_subject_{n}"] = variant.subject
            form[f"variant_from_{n}"] = variant.from_name
        form.update({"ab": "on", "ab_share": str(ab_test.share),
                     "ab_wait_minutes": str(ab_test.wait_minutes), "ab_metric": ab_test.metric})
    try:
        ab_tests.save_setup(mailing, form)
    except ab_tests.AbSetupError as exc:
        raise invalid("ab_test", str(exc)) from None


def store_send_window(mailing: Mailing, window: SendWindowIn | None) -> None:
    """Store (or with None remove) the window and local delivery through the editor's service;
    not committed."""
    form: dict[str, Any] = {}
    if window is not None:
        if window.start is not None and window.end is not None:
            form.update({"window": "on", "window_start": window.start, "window_end": window.end,
                         "window_day": [str(window_rules.DAY_NAMES.index(d)) for d in window.days]})
        if window.local_delivery:
            form["local_delivery"] = "on"
    try:
        windows.save_setup(mailing, form)
    except windows.WindowSetupError as exc:
        raise invalid("send_window", str(exc)) from None
    db.session.flush()  # the answer is read after a refresh


# ---------------------------------------------------------------- out


class AbVariantFigures(BaseModel):
    """The variant's test figures, as the mailing page shows them (the winner's messages to the
    rest of the audience are not counted)."""

    recipients: int
    sent: int
    people_opened: int = Field(description="Recipients with an open by a person")
    people_clicked: int
    machine_only_openers: int
    open_rate: float = Field(description="People who opened per message sent (0 to 1)")
    click_rate: float
    open_rate_text: str = Field(description="As on the mailing page, e.g. 12.5%")
    click_rate_text: str


class AbVariantOut(BaseModel):
    id: int
    letter: str
    subject: str
    from_name: str = Field(description="Blank: the mailing's own from-name")
    winner: bool
    figures: AbVariantFigures | None = Field(
        None, description="Once sending has started, when one mailing is read")


class AbTestOut(BaseModel):
    share: int
    metric: str
    wait_minutes: int
    variants: list[AbVariantOut]
    winner_variant_id: int | None
    winner_letter: str
    decided_by: str = Field(description="auto, staff, or empty while undecided")
    decided_at: datetime | None
    held: int | None = Field(None, description="Recipients held for the winner (one mailing read)")
    decision_due_at: datetime | None = Field(
        None, description="When the winner is chosen automatically, once the test group is sent")


class SendWindowOut(BaseModel):
    start: str | None = Field(description="HH:MM in `zone`; null without a window")
    end: str | None
    days: list[str]
    zone: str = Field(description="The organisation's zone, which the window is read in")
    description: str = Field(description="As on the mailing page, e.g. 08:00-20:00, weekdays")
    local_delivery: bool


def send_window_out(mailing: Mailing) -> SendWindowOut | None:
    window = windows.window_of(mailing)
    if window is None and not mailing.local_delivery:
        return None
    return SendWindowOut(
        start=window_rules.hhmm(window.start_minute) if window else None,
        end=window_rules.hhmm(window.end_minute) if window else None,
        days=_day_names(window.days) if window else [],
        zone=windows.org_zone(),
        description=window_rules.describe(window) if window else "",
        local_delivery=bool(mailing.local_delivery))


def ab_test_out(mailing: Mailing, variants: list[MailingVariant] | None = None,
                *, figures: bool = False) -> AbTestOut | None:
    """The test's setup; with `figures`, each variant's figures and the decision as the mailing
    page shows them (app.services.ab_tests.page_facts). None when the mailing does not test."""
    chosen = ab_tests.variants_of(mailing.id) if variants is None else variants
    if not mailing.ab_share or len(chosen) < ab_rules.MIN_VARIANTS:
        return None
    out = AbTestOut(
        share=mailing.ab_share, metric=mailing.ab_metric or "open",
        wait_minutes=mailing.ab_wait_minutes or 0,
        variants=[AbVariantOut(id=v.id, letter=ab_rules.letter(v.position), subject=v.subject,
                               from_name=v.from_name or "", winner=v.id == mailing.ab_winner_id,
                               figures=None)
                  for v in chosen],
        winner_variant_id=mailing.ab_winner_id,
        winner_letter=next((ab_rules.letter(v.position) for v in chosen
                            if v.id == mailing.ab_winner_id), ""),
        decided_by=mailing.ab_decided_by or "", decided_at=mailing.ab_decided_at,
        held=None, decision_due_at=None)
    if not figures:
        return out
    facts = ab_tests.page_facts(mailing)
    rows = {row.variant.id: row for row in facts["rows"]}
    for variant in out.variants:
        row = rows.get(variant.id)
        if row is None:
            continue
        rates = ab_rules.VariantFigures(row.variant.position, row.sent, row.opened, row.clicked)
        variant.figures = AbVariantFigures(
            recipients=row.recipients, sent=row.sent, people_opened=row.opened,
            people_clicked=row.clicked, machine_only_openers=row.machine_opened,
            open_rate=float(rates.rate("open")), click_rate=float(rates.rate("click")),
            open_rate_text=row.open_rate, click_rate_text=row.click_rate)
    out.held = facts["held"]
    out.decision_due_at = facts["due_at"]
    return out
