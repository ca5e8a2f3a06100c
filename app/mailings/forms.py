"""Forms of the mailings area (CSRF-protected through Flask-WTF)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    EmailField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    ValidationError,
)

from app.domain.eligibility import address_problem

CHAIN_CHOICES = [SelectChoice("all", "Everyone who received it"),
                 SelectChoice("openers", "Those who opened it"),
                 SelectChoice("non_openers", "Those who did not open it")]


class SenderAddress:
    """An address judged by its form alone, by the same rule as contacts' addresses: no DNS
    lookup, and a special-use domain (.local, .test, .internal...) is accepted. Sendboard hands
    mail to its own relay or capture server, which may well serve a local domain; a strict
    validator refused the demo's own demo@sendboard.local. Non-ASCII local parts are refused
    (they would need SMTPUTF8); an international domain is sent in its ASCII form."""

    def __call__(self, form: FlaskForm, field: EmailField) -> None:
        value = (field.data or "").strip()
        if not value:
            return
        problem = address_problem(value)
        if problem:
            raise ValidationError(f"{value} is not an email address: {problem}.")


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class MailingForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    subject = StringField("Subject", validators=[Optional(), Length(max=500)])
    from_name = StringField("From name", validators=[Optional(), Length(max=200)])
    from_address = EmailField("From address",
                              validators=[Optional(), SenderAddress(), Length(max=320)])
    reply_to = EmailField("Reply-to", validators=[Optional(), SenderAddress(), Length(max=320)])
    email_type_id = SelectField("Email type", coerce=int, default=0)
    # Who answers for the mailing; settable until sending starts (the editor locks then).
    owner_id = SelectField("Owner", coerce=int, default=0)
    lists = MultiCheckboxField("Audience", coerce=int, default=[])
    prevent_duplicates = BooleanField("Send one copy per address", default=True)
    html_body = TextAreaField("HTML body")
    text_body = TextAreaField("Text part")
    utm_source = StringField("utm_source", validators=[Optional(), Length(max=100)])
    utm_medium = StringField("utm_medium", validators=[Optional(), Length(max=100)])
    utm_campaign = StringField("utm_campaign", validators=[Optional(), Length(max=100)])
    send_until = DateTimeLocalField("Send until (UTC, optional)", format="%Y-%m-%dT%H:%M",
                                    validators=[Optional()])


class ScheduleForm(FlaskForm):
    local_time = DateTimeLocalField("Send at (local time)", format="%Y-%m-%dT%H:%M",
                                    validators=[DataRequired("Pick a date and time.")])
    zone = SelectField("Time zone", validators=[DataRequired()])


class StepForm(FlaskForm):
    name = StringField("Step name", validators=[DataRequired(), Length(max=200)])
    # InputRequired, not DataRequired: 0 (right after the parent) is a value, not a missing one.
    delay_days = IntegerField("Days after the previous step", default=3,
                              validators=[InputRequired("Enter a number of days (0 or more)."),
                                          NumberRange(min=0, max=365)])
    condition = SelectField("Send to", choices=CHAIN_CHOICES, default="non_openers")


class OneOffForm(FlaskForm):
    from_name = StringField("From name", validators=[Optional(), Length(max=200)])
    from_address = EmailField("From address", validators=[DataRequired(), SenderAddress(),
                                                          Length(max=320)])
    subject = StringField("Subject", validators=[DataRequired(), Length(max=500)])
    text_body = TextAreaField("Message", validators=[DataRequired()])


class ResendForm(FlaskForm):
    """Send a Sent mailing again to part of its recipients: the subject may change."""

    audience = SelectField("Send again to", choices=[
        SelectChoice("non_openers", "People who did not open it"),
        SelectChoice("deferred_soft", "Recipients deferred or soft-bounced")])
    subject = StringField("Subject", validators=[DataRequired(), Length(max=500)])


class ActionForm(FlaskForm):
    """A button-only form: carries the CSRF token and nothing else."""
