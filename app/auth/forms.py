from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from app.domain.roles import ROLE_LABELS
from app.mailings.forms import SenderAddress

ROLE_CHOICES = [SelectChoice(value, label) for value, label in ROLE_LABELS.items()]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])
    remember = BooleanField("Keep me signed in")


class UserForm(FlaskForm):
    # The same rule as mailings' sender addresses: staff of a local install may well have one.
    email = EmailField("Email", validators=[DataRequired(), SenderAddress(), Length(max=254)])
    name = StringField("Name", validators=[Length(max=200)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="editor")


class EditUserForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES)


class PasswordForm(FlaskForm):
    # Empty: a password is generated and shown once.
    password = PasswordField("New password", validators=[Optional(), Length(min=8, max=200)])


class ActiveForm(FlaskForm):
    pass
