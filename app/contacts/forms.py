"""Forms of the contacts area (CSRF-protected through Flask-WTF)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import (
    DateTimeLocalField,
    FieldList,
    Form,
    FormField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from app.domain.segments import MAX_CONDITIONS, SUBJECTS
from app.domain.transactions import future_date_problem


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

    def validate_occurred_at(self, field: DateTimeLocalField) -> None:
        """Refuse a date more than a day ahead: the rule CSV imports and the CLI follow."""
        if field.data is not None:
            problem = future_date_problem(field.data, datetime.now(UTC))
            if problem:
                raise ValidationError(problem[:1].upper() + problem[1:] + ".")


class DoNotEmailForm(FlaskForm):
    reason = StringField("Reason", validators=[Length(max=100)])


class ActionForm(FlaskForm):
    """A button-only form: carries the CSRF token and nothing else."""


OPERATOR_CHOICES = [SelectChoice(value, label) for value, label in [
    ("equals", "is"), ("not_equals", "is not"), ("contains", "contains"),
    ("not_contains", "does not contain"), ("starts_with", "starts with"),
    ("ends_with", "ends with"), ("is_set", "is filled in"), ("is_not_set", "is empty"),
    ("within_days", "in the last … days"), ("before_days", "more than … days ago"),
    ("never", "never"), ("in_list", "is in list"), ("not_in_list", "is not in list"),
]]
SUBJECT_CHOICES = [SelectChoice("", "—"), *(SelectChoice(v, label) for v, label in SUBJECTS.items())]
SEGMENT_ROWS = 5


class ConditionForm(Form):
    """One condition row; a row whose first column is left empty is ignored."""

    subject = SelectField("Contact's", choices=SUBJECT_CHOICES, default="")
    key = StringField("Custom field name", validators=[Length(max=100)])
    op = SelectField("Comparison", choices=OPERATOR_CHOICES, default="equals")
    value = StringField("Value or days", validators=[Length(max=200)])
    list_id = SelectField("List", choices=[], validate_choice=False, default="")


class SegmentForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    description = TextAreaField("Description", validators=[Optional(), Length(max=2000)])
    match = SelectField("Contacts matching", default="all",
                        choices=[SelectChoice("all", "all of the conditions"),
                                 SelectChoice("any", "any of the conditions")])
    conditions = FieldList(FormField(ConditionForm), min_entries=SEGMENT_ROWS,
                           max_entries=MAX_CONDITIONS)

    def rule_data(self) -> dict[str, Any]:
        """The submitted rule in its stored form, unvalidated (app.domain.segments.parse)."""
        rows = []
        for entry in self.conditions.entries:
            row = entry.form
            if not row.subject.data:
                continue
            value = row.list_id.data if row.subject.data == "list" else row.value.data
            rows.append({"subject": row.subject.data, "op": row.op.data, "key": row.key.data,
                         "value": value})
        return {"match": self.match.data, "conditions": rows}

    def fill(self, rule: dict[str, Any]) -> None:
        """Show a stored rule in the rows."""
        self.match.data = rule.get("match", "all")
        conditions = list(rule.get("conditions", []))
        while len(self.conditions.entries) < max(SEGMENT_ROWS, len(conditions) + 1):
            self.conditions.append_entry()
        for entry, data in zip(self.conditions.entries, conditions, strict=False):
            row = entry.form
            row.subject.data = data.get("subject", "")
            row.op.data = data.get("op", "equals")
            row.key.data = data.get("key") or ""
            if data.get("subject") == "list":
                row.list_id.data = str(data.get("value", ""))
            else:
                row.value.data = "" if data.get("value") is None else str(data["value"])

    def set_lists(self, choices: list[tuple[str, str]]) -> None:
        options = [SelectChoice("", "—"), *(SelectChoice(v, label) for v, label in choices)]
        for entry in self.conditions.entries:
            entry.form.list_id.choices = options
