"""Forms of the settings area (CSRF-protected through Flask-WTF)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, FloatField, IntegerField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

SECURITY_CHOICES = [SelectChoice("none", "None (plain SMTP)"), SelectChoice("starttls", "STARTTLS"),
                    SelectChoice("ssl", "SSL/TLS")]
KIND_CHOICES = [SelectChoice("smtp", "SMTP relay"), SelectChoice("capture", "Local capture server")]


class ProviderForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    kind = SelectField("Kind", choices=KIND_CHOICES, default="smtp")
    host = StringField("Host", validators=[DataRequired(), Length(max=255)], default="127.0.0.1")
    port = IntegerField("Port", default=25, validators=[DataRequired(), NumberRange(1, 65535)])
    security = SelectField("Security", choices=SECURITY_CHOICES, default="none")
    username = StringField("Username", validators=[Optional(), Length(max=255)])
    password = PasswordField("Password", validators=[Optional(), Length(max=255)])
    rate_per_second = FloatField("Messages per second (0: the global setting)", default=0.0,
                                 validators=[Optional(), NumberRange(min=0)])
    reports_events = BooleanField("Reports delivery events by webhook")
    is_default = BooleanField("Use for sending (default)")


class EmailTypeForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    description = StringField("Description", validators=[Optional(), Length(max=500)])


class ActionForm(FlaskForm):
    """A button-only form: carries the CSRF token and nothing else."""
