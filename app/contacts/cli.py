"""Contact commands: `sendboard import-contacts`, `record-transaction`, `create-list`.

Each command commits once its service call returned (docs/ARCHITECTURE.md, Layering)."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from flask import Flask

from app.extensions import db


def register(app: Flask) -> None:
    @app.cli.command("import-contacts")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @click.option("--list", "list_name", default=None, help="Add every contact to this list.")
    def import_contacts_command(file: str, list_name: str | None) -> None:
        """Import contacts from a CSV FILE (updates contacts already known by address)."""
        from app.services import contacts

        try:
            with open(file, "rb") as stream:
                result = contacts.import_csv(stream, list_name=list_name, source="csv")
        except contacts.ImportFileError as exc:
            raise click.ClickException(f"line {exc.line}: {exc}") from exc
        db.session.commit()
        click.echo(
            f"created {result.created}, updated {result.updated}, rejected {result.rejected}"
        )
        for error in result.errors:
            click.echo(f"line {error.line}: {error.reason}")
        if result.rejected > len(result.errors):
            click.echo(f"... and {result.rejected - len(result.errors)} more rejected rows")

    @app.cli.command("record-transaction")
    @click.argument("email")
    @click.option("--at", "at", default=None, help="ISO date or date-time (UTC); default: now.")
    @click.option("--reference", default="")
    @click.option("--amount", default="")
    def record_transaction_command(
        email: str, at: str | None, reference: str, amount: str
    ) -> None:
        """Record a transaction for the contact with address EMAIL."""
        from app.services import contacts

        try:
            when = contacts.parse_when(at) if at else datetime.now(UTC)
        except ValueError as exc:
            raise click.BadParameter(
                f"{at!r} is not an ISO date or date-time", param_hint="--at"
            ) from exc
        try:
            transaction = contacts.record_transaction(
                email, when, reference=reference, amount=amount, source="cli"
            )
        except contacts.ContactError as exc:
            # No such contact, or a date more than a day ahead (the rule CSV imports follow).
            raise click.ClickException(str(exc)) from exc
        db.session.commit()
        click.echo(f"recorded transaction {transaction.id} for {email} at {when.isoformat()}")

    @app.cli.command("create-list")
    @click.argument("name")
    @click.option("--description", default="")
    def create_list_command(name: str, description: str) -> None:
        """Create an empty contact list NAME."""
        from app.services import contacts

        try:
            created = contacts.create_list(name, description)
        except contacts.ContactError as exc:
            raise click.ClickException(str(exc)) from exc
        db.session.commit()
        click.echo(f"created list {created.name} ({created.id})")
