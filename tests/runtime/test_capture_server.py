from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from runtime_helpers import CaptureProcess, free_port

from app.runtime.capture import INDEX_NAME, CaptureServer, CaptureStore, MaildirWriter

# CRLF line endings as on the wire, a line starting with a dot (dot-stuffed in transit), 8-bit
# UTF-8 and a long header: all must come back exactly.
RAW = (
    "From: Shop <shop@example.com>\r\n"
    "To: Ana <ana@example.org>\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and news\r\n"
    "Message-ID: <abc.123@sendboard.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Hello Ana,\r\n"
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    "Grüße aus Köln — €5 off\r\n"
    "trailing spaces   \r\n"
).encode()


def send(port: int, raw: bytes, rcpt: list[str], mail_from: str = "bounce+1@bounces.test") -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.sendmail(mail_from, rcpt, raw)


def test_stores_the_data_byte_for_byte_and_indexes_it(tmp_path: Path) -> None:
    port = free_port()
    with CaptureServer(tmp_path / "capture", port=port, bounce_domain="bounces.test"):
        send(port, RAW, ["ana@example.org", "Ben@Example.org"])
    store = CaptureStore(tmp_path / "capture")
    [entry] = list(store.messages())
    assert store.raw(entry.file) == RAW
    assert (tmp_path / "capture" / "new" / entry.file).read_bytes() == RAW
    assert entry.mail_from == "bounce+1@bounces.test"
    assert entry.recipients == ("ana@example.org", "Ben@Example.org")
    assert entry.message_id == "<abc.123@sendboard.test>"
    assert entry.subject == "Grüße and news"
    assert entry.size == len(RAW)
    assert store.count_by_recipient() == {"ana@example.org": 1, "ben@example.org": 1}
    # The message is untouched: no Received or Return-Path header was added.
    assert not store.raw(entry.file).startswith(b"Received")


def test_bounce_domain_mail_goes_to_the_bounce_box(tmp_path: Path) -> None:
    port = free_port()
    with CaptureServer(tmp_path / "capture", port=port, bounce_domain="Bounces.Test"):
        send(port, RAW, ["bounce+r42@bounces.test"], mail_from="")
        send(port, RAW, ["ana@example.org", "bounce+r43@BOUNCES.test"])
        send(port, RAW, ["someone@not-bounces.test"])
    captured = CaptureStore(tmp_path / "capture")
    bounces = CaptureStore(tmp_path / "bounces")
    assert [e.recipients for e in captured.messages()] == [
        ("ana@example.org",), ("someone@not-bounces.test",)
    ]
    assert [e.recipients for e in bounces.messages()] == [
        ("bounce+r42@bounces.test",), ("bounce+r43@BOUNCES.test",)
    ]
    first = next(bounces.messages())
    assert first.mail_from == ""
    assert bounces.raw(first.file) == RAW
    # The bounce box is a standard Maildir the bounce processor can read with the stdlib.
    import mailbox

    assert len(mailbox.Maildir(tmp_path / "bounces", create=False)) == 2


def test_without_a_bounce_domain_everything_is_captured(tmp_path: Path) -> None:
    port = free_port()
    with CaptureServer(tmp_path / "capture", port=port):
        send(port, RAW, ["bounce+r42@bounces.test"])
    assert CaptureStore(tmp_path / "capture").count() == 1
    assert not (tmp_path / "bounces").exists()


def test_port_zero_is_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fixed port"):
        CaptureServer(tmp_path, port=0)


def test_reader_copes_with_missing_files_and_a_half_written_line(tmp_path: Path) -> None:
    store = CaptureStore(tmp_path / "nothing-yet")
    assert list(store.messages()) == []
    assert store.count_by_recipient() == {}
    writer = MaildirWriter(tmp_path / "box")
    entry = writer.store(RAW, "a@example.com", ["b@example.com"])
    writer.close()
    with open(tmp_path / "box" / INDEX_NAME, "ab") as fh:
        fh.write(b'{"time": 1, "from": "x@exa')  # the server is in the middle of a write
    store = CaptureStore(tmp_path / "box")
    assert [e.file for e in store.messages()] == [entry.file]
    for bad in ("", "../index.jsonl", ".hidden", "a/b"):
        with pytest.raises(FileNotFoundError):
            store.raw(bad)


def test_a_message_marked_seen_in_cur_is_still_found(tmp_path: Path) -> None:
    writer = MaildirWriter(tmp_path / "box")
    entry = writer.store(RAW, "a@example.com", ["b@example.com"])
    writer.close()
    (tmp_path / "box" / "new" / entry.file).rename(tmp_path / "box" / "cur" / f"{entry.file}:2,S")
    assert CaptureStore(tmp_path / "box").raw(entry.file) == RAW


def test_newest_pages_and_searches(tmp_path: Path) -> None:
    writer = MaildirWriter(tmp_path / "box")
    for i in range(7):
        writer.store(RAW.replace(b"and news", f"number {i}".encode()), "shop@example.com",
                     [f"user{i}@example.org"])
    writer.close()
    store = CaptureStore(tmp_path / "box")
    page = store.newest(offset=0, limit=3)
    assert [e.recipients[0] for e in page] == [f"user{i}@example.org" for i in (6, 5, 4)]
    assert [e.recipients[0] for e in store.newest(offset=6, limit=3)] == ["user0@example.org"]
    assert [e.subject for e in store.newest(search="NUMBER 3")] == ["Grüße number 3"]
    assert store.count_matching("user1@") == 1


def test_standalone_server_takes_5000_messages_and_survives_a_kill(
    capture_process: CaptureProcess,
) -> None:
    template = RAW.replace(b"<abc.123@sendboard.test>", b"<%d@sendboard.test>")
    with smtplib.SMTP("127.0.0.1", capture_process.port) as smtp:
        for i in range(5000):
            smtp.sendmail("bounce@bounces.test", [f"r{i}@example.org"], template % i)

    capture_process.kill()  # a crash: whatever was acknowledged must be on disk
    capture_process.start()
    send(capture_process.port, template % 5000, ["r5000@example.org"])
    assert capture_process.stop() == 0

    store = CaptureStore(capture_process.directory)
    counts = store.count_by_recipient()
    assert len(counts) == 5001 and max(counts.values()) == 1
    entries = list(store.messages())
    assert [e.message_id for e in entries] == [f"<{i}@sendboard.test>" for i in range(5001)]
    assert store.raw(entries[1234].file) == template % 1234
