"""The sending engine (docs/ARCHITECTURE.md, "Sending engine"). It reads top to bottom:

1. `claim.py`: the send job claims the next batch of the oldest mailing that is sending, with
   one conditional UPDATE, and reads the batch's configuration once (`config.py`).
2. `batch.py`: the batch's recipients are handed off once each, over the relay's SMTP
   connections at once, every hand-off written to the batch's ledger in Redis before its DATA.
3. `record.py`: one writer records the outcome (partial flushes every second, the final flush),
   and `state.py` interrupts or finishes the mailing through the lifecycle's moves.
4. `recovery.py`: the tick settles a batch whose worker died from its ledger, with that same
   writer.

The invariants (never a second copy, nobody lost) hold because a batch is recorded by exactly
one of its sender and the reconciler (both first move it with one conditional UPDATE), the ledger
refuses appends once the reconciler fenced the batch, and a message handed off without an answer
is Unknown, never sent again.
"""

from __future__ import annotations

from app.providers.rate import RateLimiter, provider_settings
from app.services.ledger import ALIVE_TTL
from app.services.sending import batch, claim, config, record, recovery, state
from app.services.sending.batch import (
    CONFIG_TRIES,
    RECONNECT_BACKOFF,
    _transports,
    close_connections,
    refusing_key,
    send_claim,
)
from app.services.sending.claim import (
    Claim,
    claim_batch,
    deferred_due,
    deferred_summary,
    has_work,
    quota_remaining,
    sending_queue,
)
from app.services.sending.config import BatchConfig, Deferral
from app.services.sending.record import BatchOutcome, flush, flush_progress
from app.services.sending.recovery import settle_abandoned
from app.services.sending.state import (
    _set_stop_flag,
    after_batch,
    cancel_unclaimed,
    clear_stop_flag,
    expire,
    finish_if_done,
    interrupt,
    stop_key,
)

__all__ = [
    "ALIVE_TTL",
    "CONFIG_TRIES",
    "RECONNECT_BACKOFF",
    "BatchConfig",
    "BatchOutcome",
    "Claim",
    "Deferral",
    "RateLimiter",
    "_set_stop_flag",
    "_transports",
    "after_batch",
    "batch",
    "cancel_unclaimed",
    "claim",
    "claim_batch",
    "clear_stop_flag",
    "close_connections",
    "config",
    "deferred_due",
    "deferred_summary",
    "expire",
    "finish_if_done",
    "flush",
    "flush_progress",
    "has_work",
    "interrupt",
    "provider_settings",
    "quota_remaining",
    "record",
    "recovery",
    "refusing_key",
    "send_claim",
    "sending_queue",
    "settle_abandoned",
    "state",
    "stop_key",
]
