"""Bounce classification measured against a corpus of real bounce mail with reference verdicts.

Reads every ``*.eml`` of the corpus directory given by ``--corpus`` through
`app.domain.dsn.parse` and compares each recipient's verdict with the
corpus's ``expected.json`` (one entry per file, one item per failed recipient, in order).

Categories scored: ``hard`` (the reference says the address is permanently bad), ``complaint``
(reason feedback), ``not_bounce`` (delivered reports and auto-replies), ``soft`` (everything else:
temporary failures and refusals that say nothing about the address). Prints category agreement
per file (the first recipient) and per recipient (in order; a recipient we miss or invent is a
disagreement), the confusion matrix, the share of soft bounces called hard, crashes, reason
agreement (informational) and the worst disagreements.

    python bench/bounces.py [--corpus DIR] [--worst 25]
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.domain.bounces import Reason, Verdict  # noqa: E402
from app.domain.dsn import Report, parse  # noqa: E402
from app.domain.responses import Response  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "bounces-sisimai"
CATEGORIES = ("hard", "soft", "complaint", "not_bounce")

# The reference's reason names, mapped onto ours (for the informational reason agreement).
REFERENCE_REASONS: dict[str, Reason] = {
    "userunknown": Reason.USER_UNKNOWN, "hostunknown": Reason.HOST_UNKNOWN,
    "hasmoved": Reason.HAS_MOVED, "notaccept": Reason.NOT_ACCEPTING,
    "mailboxfull": Reason.MAILBOX_FULL, "suspend": Reason.SUSPENDED, "onhold": Reason.SUSPENDED,
    "filtered": Reason.FILTERED, "spamdetected": Reason.FILTERED,
    "virusdetected": Reason.FILTERED, "contenterror": Reason.FILTERED,
    "notcompliantrfc": Reason.FILTERED, "blocked": Reason.BLOCKED,
    "badreputation": Reason.BLOCKED, "requireptr": Reason.BLOCKED, "rejected": Reason.SENDER,
    "authfailure": Reason.SENDER, "policyviolation": Reason.POLICY,
    "securityerror": Reason.POLICY, "norelaying": Reason.POLICY,
    "toomanyconn": Reason.RATE_LIMITED, "speeding": Reason.RATE_LIMITED,
    "exceedlimit": Reason.TOO_LARGE, "mesgtoobig": Reason.TOO_LARGE,
    "expired": Reason.EXPIRED, "systemerror": Reason.SYSTEM_ERROR,
    "systemfull": Reason.SYSTEM_ERROR, "mailererror": Reason.SYSTEM_ERROR,
    "syntaxerror": Reason.SYSTEM_ERROR, "networkerror": Reason.NETWORK_ERROR,
    "undefined": Reason.UNDEFINED, "vacation": Reason.AUTO_REPLY,
    "delivered": Reason.DELIVERED, "feedback": Reason.COMPLAINT,
}


def expected_category(item: dict[str, object]) -> str:
    """The corpus README's scoring: hard true -> hard; feedback -> complaint; delivered or
    vacation -> not a bounce; everything else -> soft."""
    if item.get("hard") is True:
        return "hard"
    reason = item.get("reason")
    if reason == "feedback":
        return "complaint"
    if reason in ("delivered", "vacation"):
        return "not_bounce"
    return "soft"


def verdict_category(verdict: Verdict) -> str:
    response = verdict.response
    if response is Response.HARD_BOUNCE:
        return "hard"
    if response is Response.SPAM:
        return "complaint"
    if response is None:
        return "not_bounce"
    return "soft"


def report_categories(report: Report) -> list[str]:
    """One category per verdict, as the report's kind allows."""
    if report.kind == "unsubscribe":
        return ["complaint"]
    if report.kind == "other" or not report.verdicts:
        return ["not_bounce"]
    return [verdict_category(v) for v in report.verdicts]


@dataclass
class Result:
    files: int = 0
    parsed: int = 0
    files_agree: int = 0
    recipients: int = 0
    recipients_agree: int = 0
    soft_expected: int = 0
    soft_called_hard: int = 0
    reasons: int = 0
    reasons_agree: int = 0
    crashes: list[str] = field(default_factory=list)
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    disagreements: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def file_agreement(self) -> float:
        return self.files_agree / self.files if self.files else 0.0

    @property
    def recipient_agreement(self) -> float:
        return self.recipients_agree / self.recipients if self.recipients else 0.0

    @property
    def soft_as_hard(self) -> float:
        return self.soft_called_hard / self.soft_expected if self.soft_expected else 0.0


def evaluate(corpus: Path) -> Result:
    """Score the classifier over the corpus directory."""
    expected = json.loads((corpus / "expected.json").read_text(encoding="utf-8"))
    result = Result()
    for entry in expected:
        name = str(entry["file"])
        items = list(entry["recipients"])
        try:
            report = parse((corpus / name).read_bytes())
        except Exception:  # counted and shown: the parser must never raise
            result.crashes.append(f"{name}: {traceback.format_exc(limit=2)}")
            report = Report(kind="other")
        ours = report_categories(report)
        theirs = [expected_category(i) for i in items]
        result.files += 1
        if ours[0] == theirs[0]:
            result.files_agree += 1
        wrong = []
        for i in range(max(len(ours), len(theirs))):
            got = ours[i] if i < len(ours) else "missing"
            want = theirs[i] if i < len(theirs) else "extra"
            result.recipients += 1
            result.confusion[(want, got)] += 1
            if got == want:
                result.recipients_agree += 1
            else:
                wrong.append(f"{want}->{got}")
            if want == "soft":
                result.soft_expected += 1
                result.soft_called_hard += got == "hard"
            if i < len(items) and i < len(report.verdicts):
                result.reasons += 1
                ref = REFERENCE_REASONS.get(str(items[i].get("reason")))
                result.reasons_agree += ref is report.verdicts[i].reason
        if wrong:
            # Worst first: soft called hard (a valid contact lost), then a missed hard bounce.
            weight = 3 if "soft->hard" in wrong else 2 if "hard->soft" in wrong else 1
            first = report.verdicts[0] if report.verdicts else None
            said = (f"{first.reason} {first.status or '-'} {first.diagnostic[:110]!r}"
                    if first else report.kind)
            want = ",".join(f"{i['reason']}{'(hard)' if i.get('hard') else ''}" for i in items)
            result.disagreements.append(
                (weight, name, f"{' '.join(wrong)} | expected {want} | ours {said}"))
    # The files without a reference verdict must not crash the parser either.
    scored = {str(entry["file"]) for entry in expected}
    for path in sorted(corpus.glob("*.eml")):
        result.parsed += 1
        if path.name in scored:
            continue
        try:
            parse(path.read_bytes())
        except Exception:  # counted and shown
            result.crashes.append(f"{path.name}: {traceback.format_exc(limit=2)}")
    result.disagreements.sort(key=lambda d: (-d[0], d[1]))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--worst", type=int, default=25)
    args = parser.parse_args()
    if not (args.corpus / "expected.json").exists():
        print(f"no corpus at {args.corpus}")
        return 2
    r = evaluate(args.corpus)
    print(f"corpus: {args.corpus}")
    print(f"category agreement per file:      {r.files_agree}/{r.files} = "
          f"{r.file_agreement:.1%}")
    print(f"category agreement per recipient: {r.recipients_agree}/{r.recipients} = "
          f"{r.recipient_agreement:.1%}")
    print(f"soft bounces called hard:         {r.soft_called_hard}/{r.soft_expected} = "
          f"{r.soft_as_hard:.3%}")
    print(f"reason agreement (informational): {r.reasons_agree}/{r.reasons} = "
          f"{r.reasons_agree / max(1, r.reasons):.1%}")
    print(f"crashes: {len(r.crashes)} (of {r.parsed} files parsed)")
    for crash in r.crashes[:5]:
        print("  " + crash.replace("\n", "\n  "))
    got_columns = [*CATEGORIES, "missing"]
    print("\nconfusion (rows: reference, columns: ours)")
    print(f"{'':>12}" + "".join(f"{c:>12}" for c in got_columns))
    for want in [*CATEGORIES, "extra"]:
        row = [r.confusion[(want, got)] for got in got_columns]
        if any(row):
            print(f"{want:>12}" + "".join(f"{n:>12}" for n in row))
    print(f"\nworst disagreements ({len(r.disagreements)} files):")
    for _, name, text in r.disagreements[: args.worst]:
        print(f"  {name}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
