"""The sinks against real receivers on 127.0.0.1 (``serving.infra.sinks``)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from serving.infra.sinks import (
    EmailSink,
    FileSink,
    Outgoing,
    SinkError,
    WebhookSink,
    build_sinks,
    signature,
)
from serving.settings import DispatchSettings
from tests.serving.receivers import SmtpReceiver, WebhookReceiver, free_port

SECRET = "s3cret-for-tests"


def outgoing(message_id: str = "msg-1", **changes) -> Outgoing:
    values = {
        "message_id": message_id, "customer_id": "C1", "campaign_id": "CP_03", "step": 0,
        "channel": "email", "template_id": "cp03_step0", "variant": "B",
        "due_on": date(2026, 5, 10), "subject": "We miss you, Ana", "body": "Hi Ana,\nCome back.",
        "context": {"name": "Ana"},
    }  # fmt: skip
    return Outgoing(**{**values, **changes})


def webhook(url: str, secret: str = SECRET, **options) -> WebhookSink:
    settings = {"timeout_s": 2.0, "attempts": 3, "backoff_s": 0.0, **options}
    return WebhookSink(url, secret, **settings)


def test_the_webhook_posts_signed_json_with_the_message_id_as_idempotency_key():
    # Given a receiver that checks signatures
    with WebhookReceiver(SECRET) as receiver:
        sink = webhook(receiver.url)
        # When a message is sent
        sink.send(outgoing())
        sink.close()
    # Then it arrived once, signed, keyed by its id, with every field
    assert receiver.bad_signatures == 0
    assert receiver.headers[0]["Idempotency-Key"] == "msg-1"
    assert receiver.bodies[0]["subject"] == "We miss you, Ana"
    assert receiver.bodies[0]["due_on"] == "2026-05-10"
    assert receiver.bodies[0]["context"] == {"name": "Ana"}


def test_the_webhook_retries_a_failing_receiver_with_growing_waits():
    # Given a receiver answering 500 to the first two tries of each message
    waits: list[float] = []
    with WebhookReceiver(SECRET, fail_first=2) as receiver:
        sink = webhook(receiver.url, attempts=3, backoff_s=0.1, sleep=waits.append)
        # When a message is sent
        sink.send(outgoing())
        sink.close()
    # Then the third try delivered it, after waits that doubled
    assert receiver.tries["msg-1"] == 3 and len(receiver.bodies) == 1
    assert waits == [0.1, 0.2]


def test_the_webhook_gives_up_after_its_tries_and_a_wrong_secret_is_permanent():
    with WebhookReceiver(SECRET, fail_first=5) as receiver:
        # Given a receiver failing more often than the sink tries
        sink = webhook(receiver.url, attempts=2)
        # When sent, Then the error says so and can be retried later
        with pytest.raises(SinkError, match="answered 500 \\(after 2 tries\\)") as failed:
            sink.send(outgoing())
        assert not failed.value.permanent
        # Given a sink signing with another secret, Then the 401 is permanent
        with pytest.raises(SinkError, match="401") as refused:
            webhook(receiver.url, secret="other").send(outgoing("msg-2"))
        assert refused.value.permanent and receiver.bad_signatures == 1


def test_the_webhook_refuses_an_empty_secret_and_a_server_that_is_down_is_an_error():
    # Given no secret, Then no sink
    with pytest.raises(ValueError, match="LSTEP_DISPATCH__WEBHOOK_SECRET"):
        webhook("http://127.0.0.1:9/hook", secret="  ")
    # Given nothing listening, When sent, Then a retryable error naming the URL
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(SinkError, match=f"webhook {url}: ConnectError") as down:
        webhook(url, attempts=2).send(outgoing())
    assert not down.value.permanent


def test_the_signature_is_the_hmac_sha256_of_the_body():
    # Given a known key and body (RFC 4231 test case 2), Then the digest is the published one
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert signature(b"Jefe", b"what do ya want for nothing?") == f"sha256={expected}"


def test_email_goes_to_the_smtp_server_and_parses_back():
    # Given a real SMTP server
    with SmtpReceiver() as server:
        sink = EmailSink(
            "127.0.0.1", server.port, "lstep@school.test", "{customer_id}@learners.test",
            timeout_s=5,
        )  # fmt: skip
        # When two messages are sent, one with an address in its context
        sink.send(outgoing())
        sink.send(outgoing("msg-2", context={"name": "Bo", "email": "bo@mail.test"}))
        sink.close()
    # Then both arrived, addressed, with subject, body and the message id
    first, second = server.mails
    assert (first["To"], second["To"]) == ("C1@learners.test", "bo@mail.test")
    assert first["From"] == "lstep@school.test" and first["Subject"] == "We miss you, Ana"
    assert first["Message-ID"] == "<msg-1@lstep>" and second["Idempotency-Key"] == "msg-2"
    assert first.get_content().splitlines() == ["Hi Ana,", "Come back."]  # CRLF on the wire


def test_email_to_a_server_that_is_down_is_a_retryable_error():
    sink = EmailSink("127.0.0.1", free_port(), "a@b.test", "x@y.test", timeout_s=2)
    with pytest.raises(SinkError, match=r"SMTP 127\.0\.0\.1") as down:
        sink.send(outgoing())
    assert not down.value.permanent


def test_the_file_sink_appends_one_json_line_per_message(tmp_path):
    # Given a file that already has a line
    path = tmp_path / "export" / "messages.jsonl"
    FileSink(path).send(outgoing("msg-0"))
    # When two more are sent through a new sink
    sink = FileSink(path)
    sink.send(outgoing("msg-1"))
    sink.send(outgoing("msg-2", body="Zoë's line"))
    sink.close()
    # Then the file has three lines, each a message
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["message_id"] for line in lines] == ["msg-0", "msg-1", "msg-2"]
    assert lines[2]["body"] == "Zoë's line"


def test_the_file_sink_on_a_read_only_place_is_an_error(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    with pytest.raises(SinkError, match="file-not-dir"):
        FileSink(blocked / "messages.jsonl").send(outgoing())


def test_sinks_are_built_per_channel_and_shared(tmp_path):
    # Given the default routes and a secret
    settings = DispatchSettings(webhook_secret=SECRET)
    # When the sinks of three channels are built
    sinks = build_sinks(settings, tmp_path / "m.jsonl", ["push", "csm_task", "email"])
    # Then push and csm_task share the file sink, email has the SMTP one
    assert sinks["push"] is sinks["csm_task"] and isinstance(sinks["push"], FileSink)
    assert isinstance(sinks["email"], EmailSink)
    # And a webhook channel without a secret is refused before anything is sent
    with pytest.raises(ValueError, match="secret is empty"):
        build_sinks(DispatchSettings(), tmp_path / "m.jsonl", ["webhook"])
