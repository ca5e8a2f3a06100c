"""address_problem answers the common address in one pattern; the answer must be the same as the
rule-by-rule check for every input, valid or not."""

from __future__ import annotations

import random

from app.domain.eligibility import _PLAIN, _address_problem, address_problem

PIECES = ["a", "Z", "0", "9", ".", "..", "-", "_", "+", "@", "@@", " ", "\t", "\n", "é", "ü", "ß",
          "İ", "xn--", "xn--a-", "-a", "a-", "!", "#", "~", "`", "(", ")", ",", ";", ":", "\\", '"',
          "com", "org", "c", "1", "中文", "\x00", "a" * 63, "b" * 64, "c" * 65, "d" * 200]
SHAPES = [
    "{l}@{d}.{t}", "{l}.{l}@{d}.{d}.{t}", "{l}@{d}", "{l}@{t}.", "{l}@{d}.{t}..", " {l}@{d}.{t} ",
    "{l}@{d}.{t}\n", "{l}\n@{d}.{t}", "{l}@{d}\n.{t}", "@{d}.{t}", "{l}@", "{l}@.{t}", "{l}@{d}..{t}",
    ".{l}@{d}.{t}", "{l}.@{d}.{t}", "{l}@{d}.xn--{l}", "{l}@{d}-.{t}", "{l}@-{d}.{t}", "{l}",
]


CLEAN = ["a", "Z", "0", "9", "-", "_", "+", "anna", "x1", "b" * 30]


def _part(rng: random.Random) -> str:
    pieces = CLEAN if rng.random() < 0.6 else PIECES  # many valid addresses, and many near misses
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4)))


def sample(count: int, seed: int = 20261130) -> list[str]:
    rng = random.Random(seed)
    out = ["anna@example.org", "Anna.Smith+tag@Mail.Example.CO.uk", "a@b.c", "a@b.xn--p1ai",
           "a@b.xn--p1ai-", "a@b.xn--", "x@" + "a" * 63 + ".com", "x@" + "a" * 64 + ".com",
           "b" * 64 + "@example.org", "b" * 65 + "@example.org",
           "a@" + ".".join(["label"] * 50) + ".org", "a@" + ".".join(["l"] * 130) + ".org",
           "anna@bücher.de", "anna@xn--bcher-kva.de", "user@123.456", "user@example.123"]
    for _ in range(count):
        shape = rng.choice(SHAPES)
        top = rng.choice(["com", "org", "c", "io1", "xn--p1ai", _part(rng)])
        out.append(shape.format(l=_part(rng), d=_part(rng), t=top))
    return out


def test_the_one_pattern_and_the_rules_agree_on_every_address() -> None:
    addresses = sample(60_000)
    valid = [a for a in addresses if _address_problem(a) is None]
    plain = [a for a in valid if _PLAIN.fullmatch(a)]
    # Well covered: valid addresses the pattern answers, valid ones only the rules accept
    # (spaces, a trailing dot, an international domain), and refusals of every kind.
    assert len(plain) > 500 and len(valid) - len(plain) > 1_000 and len(addresses) - len(valid) > 30_000
    differ = [(a, address_problem(a), _address_problem(a)) for a in addresses
              if address_problem(a) != _address_problem(a)]
    assert differ == []


def test_known_answers() -> None:
    assert address_problem("anna@example.org") is None
    assert address_problem(" anna@example.org ") is None
    assert address_problem("a@b.xn--p1ai-") == "the domain has a label that is not allowed"
    assert address_problem("b" * 65 + "@example.org") == "the part before @ is longer than 64 characters"
    assert address_problem("a@b.c") == "the top-level domain is not valid"
