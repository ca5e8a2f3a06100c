"""Response jobs: the 48-hour silence rule, soft-bounce invalidation and reading bounce mail."""

from __future__ import annotations

import logging

from jobs.context import in_app_context

log = logging.getLogger("sendboard.jobs.responses")


@in_app_context
def time_rules() -> dict[str, int]:
    """Sent with no report for 48 h -> Delivered (or Unknown for a reporting provider); contacts
    soft-bouncing in 3 mailings -> invalid."""
    from app.extensions import db
    from app.services import responses

    changed = responses.apply_silence_rule()  # commits mailing by mailing
    invalid = responses.invalidate_soft_bouncers()
    db.session.commit()
    result = {"recipients": sum(changed.values()), "mailings": len(changed),
              "invalid_contacts": invalid}
    if result["recipients"] or invalid:
        log.info("time rules: %s", result)
    return result


@in_app_context
def process_bounces() -> dict[str, int]:
    """Read the bounce Maildir (the capture server's) and, when configured, the IMAP box."""
    from app.services import bounces

    counts = bounces.process_maildir()
    if bounces.imap_settings() is not None:
        try:
            for key, value in bounces.poll_imap().items():
                counts[key] = counts.get(key, 0) + value
        except Exception:  # an unreachable mail server must not stop the Maildir work
            log.exception("bounce IMAP poll failed")
    return counts
