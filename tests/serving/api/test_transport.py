"""Feature rows between the processes: what crosses the wire as JSON comes back exactly."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from serving.api.models import FeatureOutcome
from serving.api.transport import day_features_of, feature_outcomes
from serving.core.asks import LearnerAsk
from serving.core.problems import NotFound
from serving.infra.learners import LearnerData, day_features
from tests.serving.fixtures import FIRST_DAY, NOW


def test_rows_problems_and_unstored_learners_survive_the_json_hop(simulated_log):
    # given asks by id, an unknown learner and a new learner sent with their record
    data = LearnerData.open(simulated_log.events_path.parent)
    known = list(data.customers.index[:3])
    event = {"ts": NOW - timedelta(days=40), "event_type": "session", "duration_s": 60.0}
    record = {"product_tag": "PT_003", "enrolled_at": NOW - timedelta(days=60), "mrr": None}
    asks = [
        *(LearnerAsk(c, FIRST_DAY, NOW) for c in known),
        LearnerAsk("NOBODY", FIRST_DAY, NOW),
        LearnerAsk("NEW-1", FIRST_DAY, NOW, events=(event,), customer=record),
    ]
    # when the outcomes go through JSON, as between the two processes
    sent = [outcome.model_dump_json() for outcome in feature_outcomes(asks, data)]
    received = day_features_of([FeatureOutcome.model_validate_json(text) for text in sent])
    # then the rows equal the assembly's own, column types included, and so do the rest
    expected = day_features(asks, data)
    pd.testing.assert_frame_equal(received.frame, expected.frame.reset_index(drop=True))
    assert received.sources == expected.sources
    assert received.problems == expected.problems
    assert isinstance(received.problems["NOBODY"], NotFound)
    assert received.unstored == frozenset({"NEW-1"})
