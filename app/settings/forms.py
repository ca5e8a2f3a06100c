"""Forms of the settings area (CSRF-protected through Flask-WTF)."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, FloatField, IntegerField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from app.config import LIMITS, PROVIDER_RATE
from app.domain.bounds import Bound, OutOfBounds

SECURITY_CHOICES = [SelectChoice("none", "None (plain SMTP)"), SelectChoice("starttls", "STARTTLS"),
                    SelectChoice("ssl", "SSL/TLS")]
KIND_CHOICES = [SelectChoice("smtp", "SMTP relay"), SelectChoice("capture", "Local capture server")]


class Within:
    """A number field's value must be finite and inside `bound` (FloatField takes "inf" and "nan")."""

    def __init__(self, bound: Bound, what: str) -> None:
        self.bound = bound
        self.what = what

    def __call__(self, form: Any, field: Any) -> None:
        if field.data is None:
            return
        try:
            self.bound.parse(field.data, self.what)
        except OutOfBounds as exc:
            raise ValidationError(str(exc)) from exc


class ProviderForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    kind = SelectField("Kind", choices=KIND_CHOICES, default="smtp")
    host = StringField("Host", validators=[DataRequired(), Length(max=255)], default="127.0.0.1")
    port = IntegerField("Port", default=25, validators=[InputRequired(), Within(LIMITS["SMTP_PORT"], "Port")])
    security = SelectField("Security", choices=SECURITY_CHOICES, default="none")
    username = StringField("Username", validators=[Optional(), Length(max=255)])
    password = PasswordField("Password", validators=[Optional(), Length(max=255)])
    rate_per_second = FloatField("Messages per second (0: the global setting)", default=0.0,
                                 validators=[Optional(), Within(PROVIDER_RATE, "Messages per second")])
    connections = IntegerField("SMTP connections per worker", validators=[
        Optional(), Within(LIMITS["SMTP_CONNECTIONS"], "SMTP connections per worker")])
    reports_events = BooleanField("Reports delivery events by webhook")
    is_default = BooleanField("Use for sending (default)")


class EmailTypeForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    description = StringField("Description", validators=[Optional(), Length(max=500)])
    transactional = BooleanField("Transactional (receipts, password resets)")


class ActionForm(FlaskForm):
    """A button-only form: carries the CSRF token and nothing else."""


class DkimForm(FlaskForm):
    """A sending domain's DKIM key: generated here, or an existing private key uploaded.

    The names are checked by the DKIM service, which says what is wrong in the product's words.
    """

    domain = StringField("Domain", validators=[Optional(), Length(max=300)])
    selector = StringField("Selector", validators=[Optional(), Length(max=300)])
    private_key = TextAreaField("Private key (PEM)", validators=[Optional()])
    key_file = FileField("or a PEM file")
