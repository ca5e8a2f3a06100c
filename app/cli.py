"""The `sendboard` command: Flask's CLI plus Sendboard's own commands."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup, routes_command, shell_command


def register_cli(app: Flask) -> None:
    """Sendboard's commands: create-user here, and every area's own, named in the list below."""
    from app.contacts.cli import register as contact_commands
    from app.responses.cli import register as response_commands
    from app.runtime.cli import register as runtime_commands

    @app.cli.command("create-user")
    @click.option("--email", required=True)
    @click.option("--password", required=True, help="At least 8 characters.")
    @click.option("--name", default="")
    @click.option("--admin", is_flag=True, help="Give the user the admin role.")
    def create_user_command(email: str, password: str, name: str, admin: bool) -> None:
        """Create a staff user (or an admin with --admin)."""
        from app.extensions import db
        from app.services.users import UserError, create_user

        try:
            user = create_user(
                email=email, password=password, name=name, role="admin" if admin else "staff"
            )
        except UserError as exc:
            raise click.ClickException(str(exc)) from exc
        db.session.commit()
        click.echo(f"created {user.role} {user.email}")

    for register in (runtime_commands, contact_commands, response_commands):
        register(app)


def _make_app() -> Flask:
    from app import create_app

    return create_app()


def main() -> None:
    group = FlaskGroup(create_app=_make_app, add_default_commands=False, load_dotenv=False)
    group.add_command(shell_command)
    group.add_command(routes_command)
    group.main()
