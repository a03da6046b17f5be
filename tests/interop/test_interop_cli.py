"""The ``dovecote`` command as a user runs it: ``run`` in the background, ``send``, ``receive``."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest


def dovecote(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dovecote", *args], capture_output=True, timeout=timeout, check=False
    )


def test_cli_send_then_receive(broker_process, unique):
    port = str(broker_process.port)
    for body in ("hello cli", "second"):
        sent = dovecote("send", "--port", port, f"/queue/{unique}", body)
        assert (sent.returncode, sent.stdout, sent.stderr) == (0, b"", b"")
    received = dovecote("receive", "--port", port, f"/queue/{unique}", "-n", "2", "--timeout", "5")
    assert (received.returncode, received.stdout, received.stderr) == (
        0,
        b"hello cli\nsecond\n",
        b"",
    )


def test_cli_send_headers_reach_a_stomp_py_consumer(broker_process, stomp_peer, unique):
    consumer = stomp_peer()
    consumer.subscribe(f"/queue/{unique}", "0")
    sent = dovecote(
        "send", "--port", str(broker_process.port), f"/queue/{unique}", "with headers",
        "-H", "x-trace:abc:1", "-H", "priority:8", "--persistent",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    (message,) = consumer.inbox.wait_messages(1)
    assert message.body == "with headers"
    assert message.headers["x-trace"] == "abc:1"
    assert message.headers["priority"] == "8"
    assert message.headers["persistent"] == "true"


def test_cli_receive_times_out_on_an_empty_queue(broker_process, unique):
    received = dovecote(
        "receive", "--port", str(broker_process.port), f"/queue/{unique}", "--timeout", "0.3"
    )
    assert (received.returncode, received.stdout, received.stderr) == (
        1,
        b"",
        b"dovecote: no message before the timeout\n",
    )


def test_cli_receive_leaves_unreceived_messages_queued(broker_process, stomp_peer, unique):
    producer = stomp_peer()
    for body in ("first", "second"):
        producer.send(f"/queue/{unique}", body)
    received = dovecote("receive", "--port", str(broker_process.port), f"/queue/{unique}")
    assert (received.returncode, received.stdout) == (0, b"first\n")
    consumer = stomp_peer()
    consumer.subscribe(f"/queue/{unique}", "0")
    assert [m.body for m in consumer.inbox.wait_messages(1)] == ["second"]


def test_cli_send_to_an_invalid_destination_reports_the_broker_error(broker_process):
    sent = dovecote("send", "--port", str(broker_process.port), "nowhere", "x")
    assert (sent.returncode, sent.stdout, sent.stderr) == (
        1,
        b"",
        b"dovecote: Invalid request: invalid destination 'nowhere': "
        b"use /queue/<name> or /topic/<name>\n",
    )


def test_cli_receive_from_an_invalid_destination_reports_the_broker_error(broker_process):
    received = dovecote("receive", "--port", str(broker_process.port), "/queue/a.*")
    assert (received.returncode, received.stdout, received.stderr) == (
        1,
        b"",
        b"dovecote: Invalid request: invalid queue name 'a.*'\n",
    )


def test_cli_send_rejects_a_header_without_colon(broker_process):
    sent = dovecote("send", "--port", str(broker_process.port), "/queue/x", "x", "-H", "oops")
    assert (sent.returncode, sent.stderr) == (2, b"dovecote: header 'oops' is not NAME:VALUE\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_broker_process_exits_zero_on_signal_and_closes_clients(
    start_broker_process, stomp_peer, sig
):
    broker = start_broker_process()
    client = stomp_peer(port=broker.port)
    client.send("/queue/shutdown", "before")
    assert broker.stop(sig) == 0
    client.inbox.wait_disconnected()
    assert "shutting down" in broker.log.read_text()


def test_broker_process_refuses_a_bad_listen_uri(tmp_path):
    run = dovecote("run", "--listen", "amqp://127.0.0.1:0", "--data-dir", str(tmp_path))
    assert (run.returncode, run.stdout) == (2, b"")
    assert run.stderr == (b"dovecote: unsupported listener scheme 'amqp' in 'amqp://127.0.0.1:0'\n")


def test_persistent_messages_and_durable_subscriptions_survive_a_restart(
    start_broker_process, stomp_peer, tmp_path
):
    data_dir = tmp_path / "kept"
    broker = start_broker_process(data_dir)
    subscriber = stomp_peer(port=broker.port, client_id="restart-client")
    subscriber.subscribe("/topic/restart.events", "d", **{"activemq.subscriptionName": "keep"})
    subscriber.close()
    producer = stomp_peer(port=broker.port)
    producer.send("/queue/restart", "persistent 1", persistent="true")
    producer.send("/queue/restart", "not persistent")
    producer.send("/queue/restart", "persistent 2", persistent="true")
    producer.send("/topic/restart.events", "for the durable subscriber", persistent="true")
    producer.close()
    assert broker.stop() == 0

    restarted = start_broker_process(data_dir)
    consumer = stomp_peer(port=restarted.port)
    consumer.subscribe("/queue/restart", "q")
    assert [m.body for m in consumer.inbox.wait_messages(2)] == ["persistent 1", "persistent 2"]
    back = stomp_peer(port=restarted.port, client_id="restart-client")
    back.subscribe("/topic/restart.events", "d", **{"activemq.subscriptionName": "keep"})
    assert [m.body for m in back.inbox.wait_messages(1)] == ["for the durable subscriber"]
    # The non-persistent message did not survive: a marker is next in line.
    producer = stomp_peer(port=restarted.port)
    producer.send("/queue/restart", "marker")
    assert [m.body for m in consumer.inbox.wait_messages(3)] == [
        "persistent 1",
        "persistent 2",
        "marker",
    ]
