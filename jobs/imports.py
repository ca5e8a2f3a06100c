"""Contact imports: the job a worker runs for an uploaded CSV file."""

from __future__ import annotations

import contextlib
import logging
import os

from jobs.context import in_app_context

log = logging.getLogger("sendboard.imports")


@in_app_context
def import_contacts(import_id: int, path: str, list_name: str | None) -> None:
    """Import the uploaded file into contacts, recording progress on ImportJob `import_id`.

    Runs in the worker's app context, or builds the app when there is none. The import commits
    its chunks as it goes; this job commits the import's final state, done or failed. The upload
    is deleted when the job ends, whether the import succeeded or not: the refused rows are kept
    on the import job with their line numbers, so the file is not needed any more.
    """
    from app.extensions import db
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
        # Recorded on the import job; a bad file is the user's to fix, not a job to retry.
        db.session.commit()
        log.info("import %s refused: %s", import_id, exc)
    except FileNotFoundError:
        contacts.fail_import_job(import_job, "the uploaded file is missing")
        db.session.commit()
    except Exception:
        log.exception("import %s failed", import_id)
        db.session.rollback()
        contacts.fail_import_job(import_job, "the import stopped on an internal error")
        db.session.commit()
        raise
    else:
        db.session.commit()
        log.info(
            "import %s done: %s created, %s updated, %s rejected",
            import_id,
            result.created,
            result.updated,
            result.rejected,
        )
    finally:
        _remove(path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
