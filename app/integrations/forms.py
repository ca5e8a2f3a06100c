"""Forms of the integrations area (CSRF-protected through Flask-WTF)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from app.services.outbound import EVENT_KIND_CHOICES


class CheckboxesField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class EndpointForm(FlaskForm):
    name = StringField("Name", validators=[Optional(), Length(max=100)])
    url = StringField("URL", validators=[DataRequired(), Length(max=2000)])
    event_kinds = CheckboxesField("Event kinds (none ticked: all)",
                                  choices=[SelectChoice(k, k) for k in EVENT_KIND_CHOICES],
                                  validate_choice=True)
    secret = StringField("Secret (empty: generate one)",
                         validators=[Optional(), Length(min=16, max=128)])
    active = BooleanField("Active", default=True)


class SecretForm(FlaskForm):
    secret = StringField("New secret (empty: generate one)",
                         validators=[Optional(), Length(min=16, max=128)])


class ActionForm(FlaskForm):
    """A button-only form: carries the CSRF token and nothing else."""
