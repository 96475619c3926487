"""The learner page on the real service (``bentoml serve`` over the served workspace): reasons
explained with the champion the worker loaded, the same words ``/explain`` gives, the campaigns the
learner received, the override form aimed at ``/override``; an unknown learner is a 404.

Read-only: the served workspace is shared with the other service tests.
"""

from __future__ import annotations

import html
import re
import time

import httpx

from tests.serving.dashboard_helpers import get_prepared, page_charts
from tests.serving.service_fixtures import SNAPSHOT_DAY


def test_the_learner_page_explains_like_explain_and_lists_campaigns(served, workspace):
    # given the first learner of the served call list
    base = f"{served.url}/dashboard"
    calls = get_prepared(f"{base}/calls", timeout=60).text
    href = re.search(r'class="learner-link" href="(/dashboard/learner/([^"]+))"', calls)
    assert href is not None
    customer_id = href.group(2)
    # when their page is asked for (a worker's first explanation may miss the page's deadline:
    # the page says so, and a reload shows it)
    response = _page_with_reasons(f"{served.url}{href.group(1)}")
    # then it shows the reasons /explain gives for the same day, in the same order
    page = html.unescape(response.text)
    explained = httpx.post(
        f"{served.url}/explain",
        json={"customer_id": customer_id, "as_of": SNAPSHOT_DAY.isoformat()},
        timeout=60,
    ).json()
    table = page.split('id="reasons"')[1].split("</table>")[0]
    shown = re.findall(r'<tr><td>([^<]+)</td><td class="num">', table)
    assert shown == [reason["text"] for reason in explained["reasons"][:8]]
    # and the waterfall ends on the stored p_churn, in points
    (trace,) = page_charts(response.text)["waterfall-chart"]["data"]
    with workspace.open_store() as store:
        score = store.latest_score(customer_id)
        campaigns = set(store.outbox_frame(customer_ids=[customer_id])["campaign_id"])
    assert trace["x"][-1] == round(100 * score["p_churn"], 6)
    assert trace["x"][0] == round(100 * explained["p_base"], 6)
    # and every campaign the learner was planned is listed
    listed = re.findall(r"<td>(CP_\d\d) ", page.split('id="campaigns"')[1])
    assert set(listed) == campaigns
    # and the form posts to the service's /override
    assert 'id="override-form"' in page and 'fetch("/override"' in page


def _page_with_reasons(url: str, attempts: int = 10) -> httpx.Response:
    for _ in range(attempts):
        response = get_prepared(url, timeout=60)
        assert response.status_code == 200, response.text
        if 'id="reasons"' in response.text:
            return response
        assert "not ready within" in response.text, response.text  # nothing else but the wait
        time.sleep(0.5)
    raise AssertionError(f"no reasons on {url} after {attempts} loads")


def test_an_unknown_learner_page_is_a_404_naming_them(served):
    response = get_prepared(f"{served.url}/dashboard/learner/nobody-here", timeout=60)
    assert response.status_code == 404 and "nobody-here" in response.text
