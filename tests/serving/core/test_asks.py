"""Asks of learners: merged batches are split so that each learner is assembled once per round."""

from __future__ import annotations

from datetime import UTC, date, datetime

from serving.core.asks import LearnerAsk, rounds

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY, OTHER = date(2026, 5, 20), date(2026, 5, 26)


def test_the_same_learner_twice_in_a_batch_is_assembled_in_separate_rounds():
    # given a merged batch with a learner asked twice on one day and another day
    asks = [
        LearnerAsk("A", DAY, NOW),
        LearnerAsk("B", DAY, NOW),
        LearnerAsk("A", DAY, NOW),
        LearnerAsk("A", OTHER, NOW),
    ]
    # then every round holds one day and distinct learners, and every ask is in one round
    grouped = list(rounds(asks))
    assert sorted(p for r in grouped for p in r) == [0, 1, 2, 3]
    for positions in grouped:
        assert len({asks[p].as_of for p in positions}) == 1
        ids = [asks[p].customer_id for p in positions]
        assert len(ids) == len(set(ids))
    assert len(grouped) == 3


def test_an_ask_with_events_is_inline():
    assert LearnerAsk("A", DAY, NOW, events=()).inline
    assert not LearnerAsk("A", DAY, NOW).inline
