"""The classifier against a corpus of real bounce mail with reference verdicts (see bench/bounces.py
for the scoring). The corpus sits next to the repository; the test is skipped where it is absent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpora" / "bounces-sisimai"

pytestmark = pytest.mark.skipif(not (CORPUS / "expected.json").exists(),
                                reason=f"bounce corpus not found at {CORPUS}")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_bounces", REPO / "bench" / "bounces.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result():
    return _bench().evaluate(CORPUS)


def test_no_message_makes_the_parser_raise(result):
    assert result.crashes == []


def test_category_agreement_is_at_least_95_percent(result):
    assert result.files >= 580
    assert result.file_agreement >= 0.95, f"{result.files_agree}/{result.files}"
    assert result.recipient_agreement >= 0.95, f"{result.recipients_agree}/{result.recipients}"


def test_fewer_than_2_percent_of_soft_bounces_are_called_hard(result):
    assert result.soft_expected >= 300
    assert result.soft_as_hard < 0.02, f"{result.soft_called_hard}/{result.soft_expected}"
