"""Benchmark: behaviour tags, campaign matching and the campaign planner at scale.

Builds a seeded synthetic day of decisions and features with numpy, then times
``rules.behaviours.behaviour_tags`` and ``rules.campaign_matching.campaign_columns`` on every
learner, and ``serving.core.campaigns.plan_campaigns`` with ``--triggered`` of them enrolled in a
campaign today (a third of them with pending steps or a full cap already). Prints the wall and
CPU seconds of each step and the number of planned messages.

    python benchmarks/campaigns.py --customers 1000000 --triggered 100000
"""

from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np
import pandas as pd

from features.catalog import load_catalog
from rules.behaviours import behaviour_tags
from rules.campaign_matching import campaign_columns
from rules.config import MODEL_SCORE_COLUMNS
from rules.loading import load_ruleset
from serving.core.campaigns import plan_campaigns

AS_OF = date(2026, 6, 1)
TAGS = np.array(["ST_001", "ST_002", "ST_003", "ST_004", "ST_005", "ST_006"], dtype=object)
PRODUCTS = np.array(["PT_001", "PT_002", "PT_003"], dtype=object)


def synthetic_day(customers: int, triggered: int, ruleset, rng: np.random.Generator):
    """Features (behaviour and context columns) and decisions, ``triggered`` with a campaign."""
    ids = np.array([f"C{i:07d}" for i in range(customers)], dtype=object)
    features = pd.DataFrame(
        {
            "customer_id": ids,
            "product_tag": rng.choice(PRODUCTS, customers),
            "active_days_7d": rng.integers(0, 8, customers).astype(float),
            "mobile_share_30d": rng.random(customers),
            "community_posts_30d": rng.poisson(1.0, customers).astype(float),
            "community_replies_30d": rng.poisson(1.0, customers).astype(float),
            "milestones_30d": rng.poisson(0.7, customers).astype(float),
            "milestones_total": rng.poisson(3, customers).astype(float),
            "lessons_30d": rng.poisson(5, customers).astype(float),
            "lessons_total": rng.poisson(20, customers).astype(float),
            "distinct_features_30d": rng.integers(0, 9, customers).astype(float),
            "video_share_30d": rng.random(customers),
            "quiz_attempts_30d": rng.poisson(2, customers).astype(float),
            "quiz_pass_rate_30d": rng.random(customers),
            "days_since_last_event": rng.integers(0, 40, customers).astype(float),
        }
    )
    to_tag = rng.choice(TAGS, customers)
    decisions = pd.DataFrame(
        {
            "customer_id": ids,
            "from_tag": np.where(rng.random(customers) < 0.9, to_tag, rng.choice(TAGS, customers)),
            "to_tag": to_tag,
            "changed": rng.random(customers) < 0.1,
            "priority": rng.choice(np.array(["P1", "P2", "P3", "P4"], dtype=object), customers),
            "action": "an action",
            "control": rng.random(customers) < 0.1,
            "why": "no activity for 9 days; daily events -62% vs the 23 days before",
        }
    )
    decisions["from_tag"] = decisions["from_tag"].where(decisions["from_tag"] != to_tag, to_tag)
    enrolled = rng.choice(customers, triggered, replace=False)
    campaign = np.full(customers, None, dtype=object)
    campaign[enrolled] = rng.choice(np.array(ruleset.campaigns.ids, dtype=object), triggered)
    decisions["campaign_id"] = campaign
    return features, decisions, ids[enrolled], campaign[enrolled]


def timed(label: str, call):
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    print(
        f"{label}: {time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--triggered", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    ruleset = load_ruleset(known_features=[*load_catalog().names, *MODEL_SCORE_COLUMNS])
    rng = np.random.default_rng(args.seed)
    features, decisions, enrolled, campaigns = synthetic_day(
        args.customers, args.triggered, ruleset, rng
    )
    tags = timed(
        f"behaviour_tags({args.customers:,})", lambda: behaviour_tags(ruleset.behaviours, features)
    )
    decisions["behaviour_tags"] = tags
    timed(
        f"campaign_columns({args.customers:,})",
        lambda: campaign_columns(ruleset.campaigns, decisions, features["product_tag"]),
    )
    third = len(enrolled) // 3
    pending = pd.DataFrame(
        {"customer_id": enrolled[:third], "campaign_id": campaigns[:third], "messages": 2}
    )
    in_window = pd.DataFrame(
        {
            "customer_id": enrolled[third : 2 * third],
            "campaign_id": campaigns[third : 2 * third],
            "messages": 1,
        }
    )
    plan = timed(
        f"plan_campaigns({args.customers:,} decisions, {args.triggered:,} triggered)",
        lambda: plan_campaigns(
            decisions, features, ruleset.campaigns, AS_OF, pending=pending, in_window=in_window
        ),
    )
    print(f"planned {len(plan.messages):,} messages, {len(plan.cancels):,} pairs cancelled")


if __name__ == "__main__":
    main()
