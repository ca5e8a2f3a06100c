"""Why a delivery failed, per recipient: one classifier for every failure we are told about.

The SMTP reply at hand-off, each recipient of a DSN (RFC 3464), plain-text bounces, provider
webhook diagnostics: all go through `classify`, which reads the reply code, the enhanced status
code (RFC 3463) and the server's words, and returns a `Verdict`: a `Reason`, the code and text it
relied on, and whether the failure is *permanent for the address*.

Evidence, most specific first:

1. words that settle the cause whatever the code (a local delivery program failing, the
   recipient's own spam preferences);
2. the server's words for what they name beyond doubt (a block list, SPF/DKIM/DMARC, a full
   mailbox, a missing user or domain...), over a status code that says something else;
3. the enhanced status code of the remote server's reply (the one right after its reply code),
   then the other codes of the diagnostic, then the report's ``Status:`` field when it says more
   than ``X.0.0``; then the reply code's class alone (``undefined``);
4. the SMTP step that was refused: at MAIL FROM the refusal is about the sender, at the greeting
   about our host, and a "user unknown" after DATA is a filter (the address passed RCPT TO).

Only a permanently bad address (user unknown, host unknown, mailbox moved, a domain that accepts
no mail) is a hard bounce, which invalidates the contact; a short "user unknown" counts only with
an X.1.y status, as the reply to RCPT TO, from the local delivery agent or in a directory
lookup's words. Refusals aimed at the sender, the content or the sending IP are Blocked (Soft
when temporary, 4xx); everything else is a Soft bounce.
See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from app.domain.responses import Response


class Reason(StrEnum):
    USER_UNKNOWN = "user_unknown"  # no such mailbox
    HOST_UNKNOWN = "host_unknown"  # no such domain / no route to it
    HAS_MOVED = "has_moved"  # the mailbox moved or changed owner
    NOT_ACCEPTING = "not_accepting"  # the domain accepts no mail at all (null MX)
    MAILBOX_FULL = "mailbox_full"
    SUSPENDED = "suspended"  # mailbox disabled, inactive or on hold
    FILTERED = "filtered"  # spam or content filter, virus
    BLOCKED = "blocked"  # the sending IP or host: block lists, reputation, reverse DNS
    SENDER = "sender"  # the sender: SPF/DKIM/DMARC, sender domain or address refused
    POLICY = "policy"  # a site policy (relaying, recipient restrictions, TLS)
    RATE_LIMITED = "rate_limited"  # too many messages or connections
    EXPIRED = "expired"  # retried until the queue lifetime ran out
    TOO_LARGE = "too_large"
    SYSTEM_ERROR = "system_error"  # the receiving system failed
    NETWORK_ERROR = "network_error"  # connection or DNS trouble on the way
    AUTO_REPLY = "auto_reply"  # a vacation or other automatic answer (RFC 3834)
    COMPLAINT = "complaint"  # a spam complaint (RFC 5965 or a provider's own format)
    DELIVERED = "delivered"  # a delivery report saying the message arrived
    UNDEFINED = "undefined"  # a failure with nothing to say why


LABELS: dict[Reason, str] = {
    Reason.USER_UNKNOWN: "user unknown",
    Reason.HOST_UNKNOWN: "host unknown",
    Reason.HAS_MOVED: "mailbox moved",
    Reason.NOT_ACCEPTING: "domain accepts no mail",
    Reason.MAILBOX_FULL: "mailbox full",
    Reason.SUSPENDED: "mailbox disabled",
    Reason.FILTERED: "spam or content filtered",
    Reason.BLOCKED: "blocked or block-listed",
    Reason.SENDER: "sender problem (SPF, DKIM, DMARC, sender domain)",
    Reason.POLICY: "policy",
    Reason.RATE_LIMITED: "rate limited",
    Reason.EXPIRED: "expired",
    Reason.TOO_LARGE: "message too large",
    Reason.SYSTEM_ERROR: "system error",
    Reason.NETWORK_ERROR: "network error",
    Reason.AUTO_REPLY: "auto-reply",
    Reason.COMPLAINT: "spam complaint",
    Reason.DELIVERED: "delivered report",
    Reason.UNDEFINED: "undefined",
}

# A permanent failure for one of these reasons says the address itself is bad.
ADDRESS_REASONS = frozenset({Reason.USER_UNKNOWN, Reason.HOST_UNKNOWN, Reason.HAS_MOVED,
                             Reason.NOT_ACCEPTING})
# Refusals aimed at the sender, the content or the sending IP.
REFUSAL_REASONS = frozenset({Reason.FILTERED, Reason.BLOCKED, Reason.SENDER, Reason.POLICY,
                             Reason.TOO_LARGE})
# Not failures at all: timeline entries.
NOT_BOUNCES = frozenset({Reason.AUTO_REPLY, Reason.DELIVERED})


@dataclass(frozen=True)
class Verdict:
    """What one failure (or report) says about one recipient."""

    reason: Reason
    permanent: bool = False  # permanent for the address: the contact is invalid
    status: str | None = None  # the enhanced status code relied on, e.g. "5.1.1"
    reply: str | None = None  # the SMTP reply code, e.g. "550"
    diagnostic: str = ""
    recipient: str | None = None  # the failed address, when the report names it
    action: str | None = None  # RFC 3464 Action (failed, delayed, delivered...)
    feedback_type: str | None = None  # for complaints (RFC 5965 Feedback-Type)

    @property
    def delayed(self) -> bool:
        """The message is still being retried: a deferral, not a bounce."""
        return self.action == "delayed" and self.reason not in NOT_BOUNCES | {Reason.COMPLAINT}

    @property
    def is_failure(self) -> bool:
        return self.reason not in NOT_BOUNCES and self.reason is not Reason.COMPLAINT \
            and not self.delayed

    @property
    def response(self) -> Response | None:
        """The recipient's response this verdict stands for; None for timeline-only reports."""
        if self.reason is Reason.COMPLAINT:
            return Response.SPAM
        if self.reason in NOT_BOUNCES:
            return None
        if self.permanent:
            return Response.HARD_BOUNCE
        if self.reason in REFUSAL_REASONS and (self.status or self.reply or "5")[0] != "4":
            return Response.BLOCKED  # a temporary refusal (4xx) may pass later: soft
        return Response.SOFT_BOUNCE

    def detail(self) -> dict[str, str | bool]:
        """The verdict as event detail, for the recipient's timeline."""
        out: dict[str, str | bool] = {"reason": self.reason.value, "permanent": self.permanent}
        for key, value in (("status", self.status), ("reply", self.reply),
                           ("diagnostic", self.diagnostic[:1000]),
                           ("final_recipient", self.recipient), ("action", self.action),
                           ("feedback_type", self.feedback_type)):
            if value:
                out[key] = value
        return out


# ---------------------------------------------------------------- codes

# Not part of a longer dotted number: "[64.4.22.10]" is an IP address, not status 4.22.10.
_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)")
# A reply code standing alone: "550 ...", "550-...", "#550", "said: 550", "smtp; 550".
_REPLY = re.compile(r"(?<![\w.\-/:=+])([245][0-5]\d)(?=[\s\-]|$)")

# RFC 3463 (and its registry): subject.detail -> reason.
_CODES: dict[str, Reason] = {
    "1.0": Reason.USER_UNKNOWN, "1.1": Reason.USER_UNKNOWN, "1.2": Reason.HOST_UNKNOWN, "1.3": Reason.USER_UNKNOWN,
    "1.4": Reason.USER_UNKNOWN, "1.6": Reason.HAS_MOVED, "1.7": Reason.SENDER,
    "1.8": Reason.SENDER, "1.10": Reason.NOT_ACCEPTING,
    "2.1": Reason.SUSPENDED, "2.2": Reason.MAILBOX_FULL, "2.3": Reason.TOO_LARGE,
    "2.4": Reason.SYSTEM_ERROR,
    "3.0": Reason.SYSTEM_ERROR, "3.1": Reason.SYSTEM_ERROR, "3.2": Reason.SYSTEM_ERROR,
    "3.3": Reason.SYSTEM_ERROR, "3.4": Reason.TOO_LARGE, "3.5": Reason.SYSTEM_ERROR,
    "4.0": Reason.NETWORK_ERROR, "4.1": Reason.NETWORK_ERROR, "4.2": Reason.NETWORK_ERROR,
    "4.3": Reason.NETWORK_ERROR, "4.4": Reason.HOST_UNKNOWN, "4.5": Reason.SYSTEM_ERROR,
    "4.6": Reason.NETWORK_ERROR, "4.7": Reason.EXPIRED,
    "5.0": Reason.SYSTEM_ERROR, "5.1": Reason.SYSTEM_ERROR, "5.2": Reason.SYSTEM_ERROR,
    "5.3": Reason.RATE_LIMITED, "5.4": Reason.SYSTEM_ERROR, "5.5": Reason.SYSTEM_ERROR,
    "5.6": Reason.SYSTEM_ERROR,
    "6.0": Reason.FILTERED, "6.1": Reason.FILTERED, "6.2": Reason.FILTERED,
    "6.3": Reason.FILTERED, "6.4": Reason.FILTERED, "6.5": Reason.FILTERED,
    "7.0": Reason.POLICY, "7.1": Reason.POLICY, "7.2": Reason.POLICY, "7.3": Reason.POLICY,
    "7.4": Reason.POLICY, "7.5": Reason.POLICY, "7.6": Reason.POLICY, "7.7": Reason.POLICY,
    "7.8": Reason.SENDER, "7.9": Reason.SENDER, "7.13": Reason.SUSPENDED,
    "7.16": Reason.TOO_LARGE, "7.17": Reason.HAS_MOVED, "7.18": Reason.HAS_MOVED,
    "7.20": Reason.SENDER, "7.21": Reason.SENDER, "7.22": Reason.SENDER, "7.23": Reason.SENDER,
    "7.24": Reason.SENDER, "7.25": Reason.BLOCKED, "7.26": Reason.SENDER,
    "7.27": Reason.SENDER, "7.28": Reason.RATE_LIMITED, "7.29": Reason.SENDER,
}


_REPLIED = re.compile(r"\b[245]\d\d[\s\-'\"#]{1,3}([245])\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)")


def enhanced_codes(text: str) -> list[str]:
    """Every enhanced status code in the text, in order."""
    return [".".join(m.groups()) for m in _ENHANCED.finditer(text or "")]


def enhanced_code(text: str) -> str | None:
    """The first enhanced status code in the text, or None."""
    codes = enhanced_codes(text)
    return codes[0] if codes else None


def reply_code(text: str) -> str | None:
    """The first SMTP reply code (like 550) in the text, or None."""
    match = _REPLY.search(text or "")
    return match.group(1) if match else None


def _code_reason(code: str) -> Reason | None:
    _, subject, detail = code.split(".")
    if subject == "0" or detail == "0" and subject in {"2", "5"}:
        return None  # "other" statuses say nothing beyond their class
    return _CODES.get(f"{subject}.{detail}")


def _address_code(code: str | None) -> bool:
    """X.1.y (y > 0): a status about the recipient's address itself."""
    return code is not None and code.split(".")[1] == "1" and code.split(".")[2] != "0"


def _specific(code: str | None) -> bool:
    return code is not None and not code.endswith(".0.0")


# ---------------------------------------------------------------- words


def _words(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(patterns), re.IGNORECASE)


# Each rule: the server's words that name a reason beyond doubt, most specific first. Order
# matters: "Recipient address rejected: User unknown" is a user, not a policy; "blocked using
# zen.spamhaus.org" is our IP whatever status code came with it.
_RULES: list[tuple[Reason, re.Pattern[str]]] = [
    (Reason.AUTO_REPLY, _words(r"\bout of (?:the )?office\b", r"\bvacation (?:reply|message)")),
    # Authentication of the sender's domain (RFC 7208, 6376, 7489) and the sender's address.
    (Reason.SENDER, _words(
        r"\bspf\b", r"\bdkim\b", r"\bdmarc\b", r"sender policy framework",
        r"domainkeys", r"not designated (?:as )?(?:a )?permitted sender",
        r"sender (?:address|domain) (?:rejected|invalid|unknown|does not|must|not)",
        r"sender address verification", r"sender verify failed", r"sender verification",
        r"(?:domain|address) of (?:the )?sender", r"sender domain",
        r"sender (?:is )?(?:not )?(?:valid|rejected|denied|unknown)", r"invalid sender",
        r"unverified sender", r"return[- ]path", r"envelope[- ]sender",
        r"mail from (?:address|domain)", r"authentication (?:failure|failed|required)",
        r"unauthenticated (?:email|mail|sender)", r"bad sender",
        r"(?:from|sender)[^\n]{0,40}(?:must resolve|does not resolve|no mx|not resolvable)",
        r"could not (?:be )?resolve[d]? (?:the )?sender", r"\bmx record .{0,40}sender",
        r"sender (?:is )?(?:on|in) (?:our|the) block", r"sender address blocked",
        r"(?:sender|your)(?:'s)? (?:e-?mail )?(?:address|account|domain)[^\n]{0,30}no longer",
        # The sender's address or domain in other languages (French, Spanish, German).
        r"(?:domaine|adresse) (?:de l'|d'|de )?exp[ée]diteur", r"(?:dominio|direcci[oó]n) (?:del? )?"
        r"remitente", r"absender-?(?:adresse|domain|dom[äa]ne)",
        # A mailing list refusing a post from an address that is not one of its members.
        r"(?:you are|you're|sender is|are) not (?:a )?member", r"only (?:list )?members (?:can|may|"
        r"are allowed to) (?:post|send)", r"non-?members? (?:posts?|submissions?|messages?) "
        r"(?:are|is) (?:not allowed|rejected|prohibited|not accepted)",
    )),
    # The sending IP or host: block lists, reputation, reverse DNS, network-level refusals.
    (Reason.BLOCKED, _words(
        r"spamhaus", r"spamcop", r"barracuda(?:central)?", r"sorbs", r"\bspews\b", r"\brbl\b",
        r"\bdnsbl\b", r"\buceprotect", r"blocked using", r"black ?list", r"block ?list",
        r"deny ?list", r"(?<!not )listed (?:at|on|in|by)", r"on (?:our|a) (?:block|black)",
        r"reputation", r"(?:client|your) (?:host|ip)[^\n]{0,60}(?:blocked|rejected|denied|refused|"
        r"not allowed|listed)", r"(?:ip|address|host|network)[^\n]{0,30}(?:is |are |was |has "
        r"been )?(?:temporarily |permanently )?(?:blocked|banned|blacklisted)",
        r"blocked[^\n]{0,30}(?:ip|address|host|network)\b", r"messages from \[?[\d.:]+\]? "
        r"weren.t sent", r"reverse (?:dns|lookup|hostname)", r"\bptr\b", r"rdns",
        r"no (?:reverse|ptr)", r"(?:does not|doesn't|cannot|can't|did not) resolve to "
        r"(?:your|the) (?:ip|address)", r"hostname (?:does not|doesn't) match",
        r"dynamic(?:ally)? (?:ip|assigned|address|pool)", r"residential", r"dial-?up",
        r"(?:could not|couldn'?t|can'?t|cannot|unable to) (?:resolve|find|look ?up|verify) your "
        r"(?:ip|address|host|hostname|host name|domain|reverse|name)",
        r"\bpoor (?:email|sending)", r"connection refused by", r"access denied.{0,30}\bip\b",
        r"\bIPs? (?:of |from )?\S* ?(?:is|are|has been) (?:not allowed|rejected|blocked)",
        r"bulk mail", r"refused to talk", r"(?:helo|ehlo)(?: command)? rejected",
        r"(?:invalid|bad) (?:helo|ehlo)",
        r"mail server (?:is )?not allowed", r"too many (?:invalid|bad) recipients",
    )),
    # The address itself.
    (Reason.HAS_MOVED, _words(r"has moved", r"mailbox (?:has )?moved", r"no longer (?:at|with)",
                              r"changed (?:his|her|their) (?:e-?mail )?address",
                              r"owner has changed",
                              # The address was valid once and is not any more.
                              r"(?:address|account|mailbox)[^\n]{0,40}\bno longer (?:valid|exists?|"
                              r"in use|in service)", r"(?:address|account|mailbox)[^\n]{0,20}\bnot "
                              r"in use any ?more")),
    # Mail from us, or mail of some kind, refused: the sender or the content, not the address.
    (Reason.SENDER, _words(r"not accept(?:ing)? (?:any )?(?:e-?)?mail from")),
    (Reason.FILTERED, _words(r"not accept(?:ing)? (?:any )?(?:e-?)?mail (?:with|containing)")),
    (Reason.NOT_ACCEPTING, _words(r"null ?mx", r"indicated no smtp service",
                                  r"(?:does not|doesn'?t|not) accept(?:ing)? (?:any )?(?:e-?)?mail"
                                  r"(?! (?:with|from|containing|that|which|sent|of|larger|over|"
                                  r"bigger|unless|exceeding|for|to|at this time|now|right now|"
                                  r"temporarily))")),
    (Reason.MAILBOX_FULL, _words(
        r"mailbox (?:is )?(?:full|over)", r"over ?quota", r"quota (?:usage )?(?:exceeded|exceed|full)",
        r"exceed(?:s|ed)? (?:the |his |her |their )?(?:storage |mailbox |disk )?quota",
        r"insufficient (?:system )?storage", r"mail ?box (?:size )?(?:limit|exceeded)",
        r"storage (?:limit|space)", r"(?:disk|mailbox) (?:space|is) (?:exceeded|full)",
        r"(?:user|recipient)(?:'s)? (?:mailbox |inbox )?is full", r"\binbox (?:is )?full",
        r"full mailbox", r"mailfolder is full", r"no space left", r"out of (?:disk )?space",
        r"too many messages in (?:the )?mailbox", r"exceeded (?:the )?storage",
        r"QuotaExceeded", r"account is full", r"disk quota", r"user's disk", r"mailbox full",
        r"(?:disk ?space|storage|mail ?box|maildir|inbox) quota",
        r"mailbox (?:exceeds|has exceeded) (?:its |the )?(?:allowed |maximum )?(?:size|disk ?space|"
        r"storage)", r"too many (?:messages|mails) (?:on|in) (?:the |this )?(?:server|account)",
        r"(?:not|n't) have enough (?:disk |storage |mailbox )?space", r"not enough (?:disk |storage )?"
        r"space",
        # The same in other languages (Spanish, French, German, Italian, Portuguese).
        r"casilla (?:de (?:correo|mail) )?(?:est[aá] )?llena", r"(?:buz[oó]n|mailbox) (?:est[aá] )?lleno",
        r"espacio (?:en|de) (?:la )?(?:casilla|buz[oó]n)[^\n]{0,30}agotado",
        r"bo[iî]te (?:aux lettres |de r[ée]ception )?(?:est )?pleine", r"postfach (?:ist )?voll",
        r"casella (?:di posta )?(?:[eè] )?piena", r"caixa (?:postal )?(?:est[aá] )?cheia",
    )),
    (Reason.SUSPENDED, _words(
        r"mailbox (?:is |has been )?(?:currently |temporarily )?(?:disabled|suspended|inactive|"
        r"deactivated|locked|frozen|unavailable due)", r"account (?:is |has been )?(?:currently "
        r"|temporarily )?(?:disabled|suspended|inactive|"
        r"deactivated|locked|frozen|expired|closed|blocked)", r"(?:disabled|suspended|inactive|"
        r"deactivated|locked|expired|frozen) (?:mailbox|account|user)", r"temporarily disabled",
        r"not (?:currently )?active", r"is (?:currently )?(?:suspended|inactive|disabled)",
        r"on hold", r"being held", r"temporar(?:y|ily) (?:locked|disabled|suspended|deactivated)",
    )),
    # Relaying refused: the server takes no mail for that domain from us (qmail's rcpthosts).
    (Reason.POLICY, _words(
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed)",
        r"(?:not permitted|unable|no permission|not allowed|denied) to relay", r"rcpthosts",
        r"unable to relay", r"we do not relay", r"not (?:an )?open relay",
    )),
    (Reason.NETWORK_ERROR, _words(
        r"host not found, try again", r"malformed or unexpected name server reply",
        r"name server (?:failure|timeout|error)", r"\bservfail\b",
        r"temporary (?:dns|name ?server|lookup|name resolution) (?:failure|error)",
        r"dns (?:lookup )?(?:timeout|timed out|temporary)",
        # No connection at all: nothing was refused by the receiving server's rules.
        r"connect to [^\n]{0,120}: (?:connection refused|connection timed out|no route to host|"
        r"network is unreachable)", r"no route to host", r"network is unreachable",
    )),
    (Reason.HOST_UNKNOWN, _words(
        r"host (?:or domain name )?(?:not found|unknown)", r"unknown (?:host|domain)",
        r"domain (?:name )?(?:not found|does not exist|doesn'?t exist|is not (?:valid|found|"
        r"known))", r"no such (?:host|domain)", r"name or service not known",
        r"name service error", r"nxdomain", r"no mx (?:or a )?(?:records?|host)",
        r"no (?:valid )?(?:mx|mail exchanger)", r"mx (?:lookup|record) (?:failed|not found)",
        r"host not found", r"domain (?:not|isn'?t) (?:in|listed|found)", r"unrouteable (?:mail )?"
        r"domain", r"invalid (?:domain|host)", r"unresolvable (?:host|domain|address)",
        r"hostname lookup failed", r"could not resolve", r"can'?t resolve", r"\bDNS (?:error|lookup)",
        r"illegal host", r"bad destination (?:host|system|domain)",
        r"domain (?:is )?not reachable",
        # qmail-remote: no host, or no mail exchanger, by the recipient's domain name.
        r"(?:couldn'?t|could not|can'?t|cannot) find any host", r"(?:couldn'?t|could not) find a "
        r"mail exchanger",
        r"(?<![@\w.\-])(?:[a-z0-9\-]+\.)+[a-z]{2,}\.? does not exist",
        # The same in other languages: "the domain does not exist".
        r"domaine[^\n]{0,40}(?:n'existe pas|inconnu|introuvable)",
        r"dominio[^\n]{0,30}(?:no existe|inexistente|non esiste|desconocido|sconosciuto)",
        r"dom[ií]nio[^\n]{0,30}(?:n[aã]o existe|inexistente|desconhecido)",
        r"domain[^\n]{0,30}(?:existiert nicht|unbekannt)",
    )),
    (Reason.USER_UNKNOWN, _words(
        r"user (?:is )?unknown", r"unknown (?:user|recipient|mailbox|address|local[- ]part|alias)",
        r"no such (?:user|recipient|mailbox|account|address|person|local user)",
        r"(?:user|recipient|mailbox|address|account|e-?mail(?: address)?|alias)(?: name)?"
        r"(?: \S+)? (?:does not|doesn'?t|did not) exist", r"does not exist", r"do(?:es|s)?n'?t exist",
        r"(?:user|recipient|mailbox|address|account)(?: \S+)? (?:is )?(?:not found|not known|"
        r"unknown|invalid|not valid|not listed|not recognized|unavailable|nonexistent|"
        r"non-existent|not exist)", r"(?:invalid|bad|nonexistent|non-existent|unknown) "
        r"(?:recipient|mailbox|user|address|account|destination)", r"bad_recipient",
        r"not an? (?:active|valid|known) (?:e-?mail )?(?:address|user|mailbox|recipient|account)",
        r"recipient (?:address )?rejected: (?:user|undeliverable|unknown|mailbox|no such|"
        r"access denied|recipient)", r"not (?:a )?(?:valid|known) (?:recipient|user|mailbox|"
        r"address)", r"address (?:is )?(?:unknown|invalid)",
        r"RecipNotFound", r"RecipientNotFound", r"not listed in (?:the )?(?:domino )?directory",
        r"no mailbox (?:here|by that name|with this name|found)", r"mailbox not found",
        r"mailbox unavailable", r"mailbox (?:name )?not allowed", r"unrouteable address",
        r"unroutable address", r"address (?:lookup|not found)", r"no (?:valid )?recipients?\b",
        r"user (?:not found|doesn'?t have|has no|not local|not exist|missing)",
        r"not (?:our|a local) (?:customer|user)", r"(?:unknown|invalid) e-?mail",
        r"undeliverable address", r"is not a valid mailbox", r"no account by that name",
        r"(?:recipient|user|addressee) unknown", r"Benutzer unbekannt",
        r"permanent error.{0,40}no (?:user|such)", r"account (?:does not|doesn'?t) exist",
        r"this user doesn't have", r"can't find (?:the )?(?:recipient|user|mailbox)",
        r"not a valid user", r"has no mailbox", r"invalid (?:local[- ]?part|mailbox|address)",
        r"(?:local|this) user is not", r"no user", r"user not exist", r"unknown local",
        r"mailbox (?:does not|doesn'?t) exist", r"recipient (?:not|is not) (?:found|valid)",
        r"\bno mail ?box\b", r"invalid[- ]recipient", r"invalid (?:final delivery )?userid",
        r"ディレクトリ.{0,10}(?:見つかりません|ありません)",  # Domino: not in the directory
        r"not listed in (?:the )?(?:public )?(?:name ?& ?address book|[\w ]{0,20}directory)",
        # The same in other languages: "does not exist", "unknown recipient / user".
        r"n'existe pas", r"(?:destinataire|utilisateur|adresse) (?:est )?inconnu",
        r"(?:usuario|destinatario|buz[oó]n|cuenta|direcci[oó]n) (?:desconocid[oa]|inexistente|"
        r"no existe)", r"(?:utente|destinatario|indirizzo) (?:sconosciuto|inesistente|non esiste)",
        r"(?:usu[aá]rio|destinat[aá]rio|conta|endere[cç]o) (?:desconhecido|inexistente|n[aã]o existe)",
        r"\b(?:empf(?:ä|ae|a)nger|benutzer|adresse|postfach)[^\n]{0,30}(?:existiert nicht|"
        r"unbekannt)",
        r"nie istnieje",
    )),
    (Reason.TOO_LARGE, _words(
        r"too (?:large|big|long)", r"size (?:limit|exceeded|exceeds)",
        r"exceeds? (?:the )?(?:maximum|max|size|message size|allowed)", r"message (?:length|size) "
        r"(?:exceeds|limit|too)", r"maximum (?:message )?size", r"larger than",
    )),
    (Reason.RATE_LIMITED, _words(
        r"too many (?:messages|connections|concurrent|mails?|recipients|sessions|emails|"
        r"requests|simultaneous)", r"rate limit", r"rate[- ]limited", r"ratelimit",
        r"sending rate", r"exceeded (?:the )?(?:rate|message limit|daily|hourly|sending)",
        r"(?:daily|hourly) (?:sending )?(?:limit|quota)", r"throttl", r"slow down",
        r"connection limit", r"too (?:fast|quickly)", r"try again (?:later|in)", r"greylist",
        r"graylist",
        r"grey-listed", r"please retry later", r"temporarily deferred", r"deferred due to",
        r"recipient rate", r"(?:maximum|too many) (?:number of )?(?:recipients|connections)",
        r"speed",
    )),
    (Reason.FILTERED, _words(
        r"\bspam\b", r"\bspams\b", r"junk", r"unsolicited", r"content (?:filter|rejected|policy|"
        r"not accepted)", r"message (?:content|filtered|rejected (?:as|because|due|by))",
        r"virus", r"malware", r"phish", r"infected", r"suspicious", r"bulk", r"scam",
        r"filtered", r"filter", r"\bUBE\b", r"\bmime\b", r"attachment", r"\bheaders?\b", r"8-?bit",
        r"looks like", r"classified as", r"rejected by (?:the )?(?:recipient|filter)",
        r"not complian", r"rfc ?(?:2822|5322|822)", r"message (?:was )?(?:blocked|refused)",
        r"(?:does|did) not (?:accept|allow) (?:this|your) (?:message|mail|content)",
        r"\burls?\b", r"\blinks?\b", r"\bimages?\b",
    )),
    # A bare "blocked" once the words named no content problem: a refusal of the sender.
    (Reason.BLOCKED, _words(r"\bblocked\b", r"\bbanned\b")),
    (Reason.EXPIRED, _words(
        r"retry (?:timeout|time) (?:exceeded|not reached)", r"delivery time expired",
        r"(?:message|mail) (?:has been )?(?:expired|timed out|too old)", r"queue ?(?:lifetime|time)",
        r"could not be delivered (?:within|for)", r"gave up", r"giving up", r"have been failing",
        r"not (?:be )?delivered (?:within|for|after)", r"(?:in|stayed in) (?:the )?queue (?:too long|"
        r"for)", r"time(?:d)? ?out (?:waiting|exceeded)", r"expired after", r"retry limit",
        r"(?:maximum|max) (?:time|number of (?:retries|attempts))", r"unable to deliver.{0,40}"
        r"(?:days|hours)", r"delivery attempts? (?:will )?(?:stop|ceased|failed for)",
        r"for (?:more than )?\d+ (?:days|hours)", r"\bexpired\b",
    )),
    (Reason.POLICY, _words(
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed)",
        r"(?:not permitted|unable|no permission|not allowed|denied) to relay",
        r"not (?:an )?open relay", r"relay not", r"we do not relay", r"\bpolicy\b",
        r"not authori[sz]ed", r"not permitted", r"not allowed", r"prohibited", r"forbidden",
        r"restricted", r"only accepts? (?:mail|messages) from", r"access denied",
        r"permission denied", r"\btls\b", r"starttls", r"encryption", r"administrative",
        r"refused", r"\bdenied\b", r"unacceptable", r"\brejected\b",
    )),
    (Reason.NETWORK_ERROR, _words(
        r"connection (?:timed out|refused|reset|closed|lost|dropped|failure)",
        r"timed out", r"timeout", r"no route to host", r"network (?:is )?unreachable",
        r"host (?:is )?unreachable", r"lost connection", r"unable to connect", r"could not connect",
        r"couldn'?t connect", r"can'?t connect", r"connect to .{0,80}:", r"broken pipe",
        r"tls (?:handshake|negotiation) failed", r"mail for \S+ loops", r"mail loops?",
        r"routing loop", r"too many hops", r"loop detected", r"loops back",
    )),
    (Reason.SYSTEM_ERROR, _words(
        r"system (?:error|failure|problem|config)", r"internal (?:server )?error",
        r"local (?:error|configuration)", r"server error", r"out of memory", r"i/?o error",
        r"temporar", r"unavailable", r"not available", r"service (?:is )?(?:not )?available",
        r"try (?:again|later)", r"misconfigur", r"mail ?system", r"unable to (?:process|deliver)",
        r"resources", r"crashed", r"exit code", r"command (?:died|failed)", r"problem",
    )),
]
_FULL_WORDS = next(p for r, p in _RULES if r is Reason.MAILBOX_FULL)
# Words that name the cause whatever status code came with them.
_DECISIVE: list[tuple[Reason, re.Pattern[str]]] = [
    # A local delivery program failed (procmail, a pipe, a mailbox file): the system's fault.
    (Reason.SYSTEM_ERROR, _words(r"couldn'?t create", r"command died with status",
                                 r"\bprocmail:", r"command output:", r"mail(?:er)? program",
                                 r"local delivery (?:agent )?failed", r"\bunable to write\b")),
    (Reason.FILTERED, _words(r"recipient(?:'s)? preferences", r"recipient(?:'s)? (?:spam|junk) "
                             r"(?:settings|filter)")),
]
# Reasons the words may give over a specific status code that disagrees: the code is the MTA's
# (often generic) translation, while these words name a precise cause.
_STRONG_WORDS = frozenset({Reason.SENDER, Reason.BLOCKED, Reason.MAILBOX_FULL,
                           Reason.USER_UNKNOWN, Reason.HOST_UNKNOWN, Reason.HAS_MOVED,
                           Reason.SUSPENDED, Reason.NOT_ACCEPTING, Reason.TOO_LARGE,
                           Reason.RATE_LIMITED, Reason.EXPIRED, Reason.NETWORK_ERROR})
# Specific status codes that only strong words may overrule.
_AUTHORITATIVE = frozenset({"1.1", "1.2", "1.3", "1.6", "1.10", "2.2", "2.1", "2.3", "3.4",
                            "4.4", "4.7", "7.17", "7.18", "7.20", "7.21", "7.22", "7.23",
                            "7.24", "7.25", "7.26", "7.27"})


_STAGE = re.compile(
    r"in\s+reply\s+to\s+(?:the\s+)?(end\s+of\s+data|data|rcpt\s+to|mail\s+from|helo|ehlo)\b|"
    r"after\s+(end\s+of\s+data|data|rcpt\s+to|rcpt|mail\s+from|helo|ehlo|initial\s+connection)\b|"
    r">>>\s*(data|rcpt\s+to|mail\s+from|helo|ehlo)\b|smtp\s+command:?\s*(data|rcpt|mail|helo|ehlo)\b|"
    r"(but\s+sender\s+was\s+rejected|my\s+name\s+was\s+rejected|does\s+not\s+like\s+recipient|"
    r"failed\s+after\s+I\s+sent\s+the\s+message)|\[(rcpt)_?to\]|"
    r"most\s+progress\s+was\s+(rcpt\s+to|mail\s+from)|"
    r"did\s+not\s+like\s+our\s+(rcpt\s+to|mail\s+from|data)|"
    r"\bsmtp\s*:\s*(rcpt|mail|data)\b|(mail\.local:|\blocal\s+delivery|\blmtp\b)|"
    r"\b(rcpt\s+to|mail\s+from|data)\s+generated\s+(?:the\s+)?following\s+response|"
    r"(helo|ehlo)\s+command\s+rejected",
    re.IGNORECASE)
_STAGE_NAMES = {"end of data": "DATA", "data": "DATA", "rcpt to": "RCPT", "rcpt": "RCPT",
                "mail from": "MAIL", "mail": "MAIL", "helo": "CONNECT", "ehlo": "CONNECT",
                "initial connection": "CONNECT", "but sender was rejected": "MAIL",
                "my name was rejected": "CONNECT", "does not like recipient": "RCPT",
                "failed after i sent the message": "DATA",
                # The local delivery agent knows its users: as good as the reply to RCPT TO.
                "mail.local:": "RCPT", "local delivery": "RCPT", "lmtp": "RCPT"}


# The words of a directory lookup, which no filter uses: they name a missing address even
# without an address status or the reply to RCPT TO. Shorter answers ("user unknown", "no such
# user", RFC 5321's "mailbox unavailable") are also what filters say after DATA.
_DIRECTORY_WORDS = re.compile(
    r"recipient name is not recognized|not listed in (?:the )?(?:public )?"
    r"(?:name ?& ?address book|[\w ]{0,20}directory)|invalid (?:final delivery )?userid|"
    r"no valid recipients|address (?:couldn'?t|could not) be found|\baddress not found|"
    r"user not exist|Recip(?:ient)?NotFound|in (?:the )?(?:local recipient|virtual mailbox|"
    r"virtual alias|relay recipient|recipient) table|"
    r"unrouteable address|5\.4\.1\b.{0,80}recipient address rejected: access denied|"
    r"invalid mailbox|unknown user: \"[^\"]+\"|"
    r"ディレクトリ.{0,10}(?:見つかりません|ありません)", re.IGNORECASE)


def _transcript_stage(text: str) -> str | None:
    """The command a session transcript's first refusal answered (">>> RCPT To:<...>" then
    "<<< 550 ..."). With pipelining the reply to RCPT TO may follow ">>> DATA"; it is then taken
    as DATA's, the cautious reading (a "user unknown" there is not proof of a missing mailbox)."""
    command = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(">>>"):
            match = _STAGE.search(line)
            command = _STAGE_NAMES.get(" ".join(next(g for g in match.groups() if g).lower()
                                                .split())) if match else "OTHER"
        elif line.startswith("<<<") and command is not None and re.match(r"<<<\s*[45]\d\d", line):
            return command if command != "OTHER" else None
    return None


def smtp_stage(text: str) -> str | None:
    """The SMTP step a refusal answered (CONNECT, MAIL, RCPT or DATA): from a session
    transcript, else the last one the text names ("in reply to RCPT TO command", "after end of
    data"...)."""
    if ">>>" in (text or "") and "<<<" in text:
        found = _transcript_stage(text)
        if found:
            return found
    last = None
    for match in _STAGE.finditer(text or ""):
        last = next(g for g in match.groups() if g)
    return _STAGE_NAMES.get(" ".join(last.lower().split())) if last else None


# An e-mail address in the server's words names someone, not a cause: "hurley@", "spam-desk@" or
# "@bulkmail.example" must not read as "url", "spam" or "bulk".
_MAILBOX = re.compile(r"[\w.!#$%&'*+/=?^`{|}~\-]+@[\w\-]+(?:\.[\w\-]+)*")


def words_reason(text: str) -> Reason | None:
    """The reason the server's words name, or None."""
    if not text:
        return None
    text = _MAILBOX.sub("x@x", text)
    for reason, pattern in _RULES:
        if pattern.search(text):
            return reason
    return None


def _clean(text: str | None) -> str:
    return " ".join(str(text or "").split())


def _status_class(status: str | None, reply: str | None) -> str | None:
    if status:
        return status[0]
    if reply:
        return reply[0]
    return None


def classify(status: str | None = None, diagnostic: str = "", *, action: str | None = None,
             recipient: str | None = None, reply: str | None = None,
             stage: str | None = None, reported: Reason | None = None) -> Verdict:
    """One failure's verdict, from a report's status field, the server's words and the action.

    ``status`` is an enhanced status code or a reply code (a DSN ``Status:`` field, a webhook's
    status, the reply code at hand-off); ``diagnostic`` is what the server said.
    """
    text = _clean(diagnostic)[:4000]
    field = _clean(status)[:200]
    act = _clean(action).lower() or None
    if act in ("delivered", "relayed", "expanded", "deliverable"):
        return Verdict(Reason.DELIVERED, status=enhanced_code(field), diagnostic=text[:1000],
                       recipient=recipient, action=act)
    text_codes = [c for c in enhanced_codes(text) if c[0] != "2"]
    field_code = enhanced_code(field)
    # The remote server's own code (in its words) is more specific than the report's field,
    # unless it is a bare "other" status while the field names a detail.
    # A code right after a reply code is the remote server's own ("550-'5.7.1 ..."), more
    # specific than a relay's summary around it ("5.1.0 - Unknown address error 550-...").
    replied = [".".join(m.groups()) for m in _REPLIED.finditer(text)]
    code = next((c for c in replied + text_codes if _specific(c) and c[0] != "2"), None)
    if code is None and _specific(field_code):
        code = field_code
    if code is None:
        code = field_code or (text_codes[0] if text_codes else None)
    reply = reply or reply_code(field) or reply_code(text)
    klass = _status_class(code, reply)
    if klass is None and act == "failed":
        klass = "5"
    if klass is None and act == "delayed":
        klass = "4"

    by_words = words_reason(text)
    decisive = next((r for r, p in _DECISIVE if p.search(text)), None)
    by_code = _code_reason(code) if code else None
    reason: Reason
    if by_words is Reason.AUTO_REPLY:
        reason = Reason.AUTO_REPLY
    elif decisive is not None:
        reason = decisive
    elif by_code is not None and by_words is not None:
        key = ".".join(code.split(".")[1:]) if code else ""
        if by_words in _STRONG_WORDS or key not in _AUTHORITATIVE:
            reason = by_words
        else:
            reason = by_code
        # A code naming the address beats vaguer words (policy, filter, system).
        if by_code in ADDRESS_REASONS and by_words not in _STRONG_WORDS:
            reason = by_code
        if by_code is Reason.HAS_MOVED and by_words is Reason.USER_UNKNOWN:
            reason = by_code  # "not our user" with X.1.6: the mailbox moved
    else:
        reason = by_words or by_code or Reason.UNDEFINED
    if reply == "551" and reason in (Reason.USER_UNKNOWN, Reason.UNDEFINED):
        reason = Reason.HAS_MOVED  # RFC 5321: user not local, try another path
    detail = code.split(".", 1)[1] if code else "0.0"
    if reply in ("521", "556") and (
            detail in ("1.10", "3.2") and reason not in ADDRESS_REASONS | _STRONG_WORDS
            or detail == "0.0" and reason in (Reason.UNDEFINED, Reason.SYSTEM_ERROR)):
        # RFC 7504: the host or domain accepts no mail. Not when the code or the words name
        # another cause: servers also answer 521 to refuse a sender or an IP.
        reason = Reason.NOT_ACCEPTING
    if reason is Reason.AUTO_REPLY:
        return Verdict(Reason.AUTO_REPLY, diagnostic=text[:1000], recipient=recipient,
                       action=act)
    stage = stage or smtp_stage(text)
    bare = reason is Reason.USER_UNKNOWN and not _DIRECTORY_WORDS.search(text)
    if bare and stage == "DATA" and by_code is not Reason.USER_UNKNOWN:
        # The address was accepted at RCPT TO: a refusal of the message itself that says "user
        # unknown" is a per-recipient filter, not a missing mailbox.
        reason = Reason.FILTERED
    elif reason in ADDRESS_REASONS and stage == "MAIL":
        reason = Reason.SENDER  # refused before any recipient was named: the sender's address
    elif reason in ADDRESS_REASONS and stage == "CONNECT":
        reason = Reason.BLOCKED  # refused at the greeting: our host
    if act == "delayed" and reason is Reason.EXPIRED:
        reason = by_code if by_code not in (None, Reason.EXPIRED) else Reason.UNDEFINED
    permanent = reason in ADDRESS_REASONS and klass == "5" and act != "delayed"
    if permanent and reason is Reason.USER_UNKNOWN and by_code is not Reason.USER_UNKNOWN \
            and stage != "RCPT" and not _address_code(code) and bare:
        # A bare "user unknown" proves little: filters answer it after DATA too. It is the
        # address with an address status (X.1.x), as the reply to RCPT TO, or in the words of
        # a directory lookup ("not listed in the directory", "Recipient not found"...).
        permanent = False
    if permanent and reason is Reason.USER_UNKNOWN and _FULL_WORDS.search(text):
        # "Unknown user or mailbox full": the server does not say which; the address may be good.
        permanent = False
    if reason is Reason.USER_UNKNOWN and code and code.split(".")[1] == "2" \
            and by_code is not Reason.MAILBOX_FULL and stage != "RCPT":
        # X.2.x says the mailbox exists (RFC 3463): "user unknown" with it is a filter's answer.
        reason, permanent = Reason.FILTERED, False
    if reported is not None and klass != "4" and act != "delayed" and (
            reason is Reason.UNDEFINED or reported in ADDRESS_REASONS
            and reason in (Reason.USER_UNKNOWN, Reason.FILTERED, Reason.HOST_UNKNOWN)):
        # The reporting MTA's own per-recipient category settles what the reply left open.
        reason, permanent = reported, reported in ADDRESS_REASONS
    return Verdict(reason, permanent=permanent, status=code, reply=reply,
                   diagnostic=text[:1000], recipient=recipient, action=act)


def classify_reply(code: int | str, text: str = "") -> Verdict:
    """The verdict on an SMTP refusal at hand-off: the reply code and the server's words."""
    reply = str(code)
    return classify(reply, f"{reply} {text}".strip(), action="failed" if reply[:1] == "5"
                    else "delayed", reply=reply if reply_code(reply) else None)


def classify_status(status: str | None, diagnostic: str = "") -> Response:
    """The response for a failure given as a status code and the server's words (webhooks)."""
    return classify(status, diagnostic, action="failed").response or Response.SOFT_BOUNCE
