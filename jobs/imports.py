"""Contact imports: the job a worker runs for an uploaded CSV file."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from flask import has_app_context

log = logging.getLogger("sendboard.imports")


@contextlib.contextmanager
def _app_context() -> Iterator[None]:
    """The worker's app context when there is one; otherwise a fresh app (a bare RQ worker)."""
    if has_app_context():
        yield
        return
    from app import create_app

    with create_app().app_context():
        yield


def import_contacts(import_id: int, path: str, list_name: str | None) -> None:
    """Import the uploaded file into contacts, recording progress on ImportJob `import_id`.

    The upload is deleted when the job ends, whether the import succeeded or not: the rows that
    were refused are kept on the import job with their line numbers, so the file is not needed.
    """
    with _app_context():
        from app.services import contacts

        import_job = contacts.get_import_job(import_id)
        if import_job is None:
            log.warning("import %s no longer exists; dropping %s", import_id, path)
            _remove(path)
            return
        try:
            with open(path, "rb") as stream:
                result = contacts.import_csv(
                    stream, list_name=list_name, source="csv", import_job=import_job
                )
        except contacts.ImportFileError as exc:
            # Already recorded on the import job; a bad file is the user's to fix, not a job
            # failure to retry.
            log.info("import %s refused: %s", import_id, exc)
        except FileNotFoundError:
            contacts.fail_import_job(import_job, "the uploaded file is missing")
        except Exception:
            log.exception("import %s failed", import_id)
            from app.extensions import db

            db.session.rollback()
            contacts.fail_import_job(import_job, "the import stopped on an internal error")
            raise
        else:
            log.info(
                "import %s done: %s created, %s updated, %s rejected",
                import_id, result.created, result.updated, result.rejected,
            )
        finally:
            _remove(path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
