"""The import job: runs the import, records failures, deletes the upload."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from app import config, create_app
from app.extensions import db
from app.models import ImportJob
from app.services import contacts
from jobs.imports import import_contacts


def _job(app: Flask, import_id: int) -> ImportJob:
    db.session.expire_all()
    job = db.session.get(ImportJob, import_id)
    assert job is not None
    return job


def test_import_job_imports_and_deletes_the_upload(app: Flask, tmp_path: Path) -> None:
    upload = tmp_path / "u.csv"
    upload.write_text("email,list\nada@example.org,Gold\nbad,Gold\n", encoding="utf-8")
    job = contacts.create_import_job("u.csv")
    db.session.commit()  # as the upload page does

    import_contacts(job.id, str(upload), "All")

    stored = _job(app, job.id)
    assert (stored.status, stored.created, stored.rejected) == ("done", 1, 1)
    assert stored.errors == [{"line": 3, "reason": stored.errors[0]["reason"]}]
    assert not upload.exists()
    counts = {lst.name: n for lst, n in contacts.lists_with_counts()}
    assert counts == {"All": 1, "Gold": 1}


def test_bad_file_marks_the_import_failed_without_raising(app: Flask, tmp_path: Path) -> None:
    upload = tmp_path / "u.csv"
    upload.write_text("name\nAda\n", encoding="utf-8")
    job = contacts.create_import_job("u.csv")
    db.session.commit()  # as the upload page does

    import_contacts(job.id, str(upload), None)

    stored = _job(app, job.id)
    assert stored.status == "failed"
    assert "no email column" in stored.errors[0]["reason"]
    assert not upload.exists()


def test_missing_upload_marks_the_import_failed(app: Flask, tmp_path: Path) -> None:
    job = contacts.create_import_job("gone.csv")
    db.session.commit()  # as the upload page does
    import_contacts(job.id, str(tmp_path / "gone.csv"), None)
    stored = _job(app, job.id)
    assert stored.status == "failed"
    assert stored.errors[-1]["reason"] == "the uploaded file is missing"


def test_unknown_import_drops_the_upload(app: Flask, tmp_path: Path) -> None:
    upload = tmp_path / "u.csv"
    upload.write_text("email\nada@example.org\n", encoding="utf-8")
    import_contacts(424242, str(upload), None)
    assert not upload.exists()
    assert contacts.find_contact("ada@example.org") is None


def test_internal_error_marks_failed_and_reraises(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = tmp_path / "u.csv"
    upload.write_text("email\nada@example.org\n", encoding="utf-8")
    job = contacts.create_import_job("u.csv")
    db.session.commit()  # as the upload page does

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(contacts, "import_csv", broken)
    with pytest.raises(RuntimeError):
        import_contacts(job.id, str(upload), None)
    assert _job(app, job.id).status == "failed"
    assert not upload.exists()


def test_without_an_app_context_the_job_builds_its_own_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = create_app(config.TestConfig(str(tmp_path)))
    with setup.app_context():
        db.create_all()
        import_id = contacts.create_import_job("u.csv").id
        db.session.commit()  # as the upload page does before handing the file to a worker
        uri = setup.config["SQLALCHEMY_DATABASE_URI"]
        db.engine.dispose()
    monkeypatch.setattr("jobs.context._app", None)  # no app built by an earlier test
    monkeypatch.setenv("DATABASE_URL", uri)
    monkeypatch.setenv("SENDBOARD_INSTANCE", str(tmp_path))
    upload = tmp_path / "u.csv"
    upload.write_text("email\nada@example.org\n", encoding="utf-8")

    import_contacts(import_id, str(upload), None)

    with setup.app_context():
        job = db.session.get(ImportJob, import_id)
        assert job is not None and (job.status, job.created) == ("done", 1)
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            db.drop_all()
        db.engine.dispose()
