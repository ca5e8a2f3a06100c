"""Forms of the contacts area (CSRF-protected through Flask-WTF)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import DateTimeLocalField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional


class UploadForm(FlaskForm):
    file = FileField(
        "CSV file",
        validators=[
            FileRequired("Choose a CSV file."),
            FileAllowed(["csv", "txt"], "CSV files only."),
        ],
    )
    list_name = StringField(
        "Add every contact to the list (optional)", validators=[Length(max=200)]
    )


class ListForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    description = TextAreaField("Description", validators=[Optional(), Length(max=2000)])


class TransactionForm(FlaskForm):
    occurred_at = DateTimeLocalField(
        "When (UTC)", format="%Y-%m-%dT%H:%M", validators=[DataRequired()]
    )
    reference = StringField("Reference", validators=[Length(max=200)])
    amount = StringField("Amount", validators=[Length(max=40)])


class DoNotEmailForm(FlaskForm):
    reason = StringField("Reason", validators=[Length(max=100)])


class ActionForm(FlaskForm):
    """A button-only form: carries the CSRF token and nothing else."""
