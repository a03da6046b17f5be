"""stomp.py against ``dovecote run``: ActiveMQ's scheduler management topic
(``/topic/ActiveMQ.Scheduler.Management``): BROWSE to a reply-to queue, REMOVE by the
``scheduledJobId`` of a browsed copy, and the removal kept across a kill -9.

Exact timing and ranges are tested in tests/core/test_schedule_management.py; here a marker
message, scheduled after the removed one, shows that the removed one did not fire."""

from __future__ import annotations

import signal

MANAGEMENT = "/topic/ActiveMQ.Scheduler.Management"


def _browse(peer, reply_to: str, count: int) -> list:
    peer.send(MANAGEMENT, "", AMQ_SCHEDULER_ACTION="BROWSE", **{"reply-to": reply_to})
    return peer.inbox.wait_messages(count)


def test_browse_then_remove_by_job_id(stomp_peer, unique):
    producer = stomp_peer()
    producer.send(f"/queue/{unique}", "doomed", AMQ_SCHEDULED_DELAY="1500", color="red")
    producer.send(f"/queue/{unique}", "kept", AMQ_SCHEDULED_DELAY="2000")
    admin = stomp_peer()
    admin.subscribe(f"/queue/{unique}.replies", "replies")
    browsed = _browse(admin, f"/queue/{unique}.replies", 2)
    assert [m.body for m in browsed] == ["doomed", "kept"]
    doomed = browsed[0].headers
    assert doomed["AMQ_SCHEDULED_DELAY"] == "1500"
    assert doomed["color"] == "red"
    assert doomed["original-destination"] == f"/queue/{unique}"
    admin.send(
        MANAGEMENT, "", AMQ_SCHEDULER_ACTION="REMOVE", scheduledJobId=doomed["scheduledJobId"]
    )
    consumer = stomp_peer()
    consumer.subscribe(f"/queue/{unique}", "1")
    assert [m.body for m in consumer.inbox.wait_messages(1)] == ["kept"]
    assert consumer.inbox.bodies() == ["kept"]  # "doomed" was due first: it never fired


def test_browse_to_a_temporary_queue(stomp_peer, unique):
    producer = stomp_peer()
    producer.send(f"/queue/{unique}", "later", AMQ_SCHEDULED_DELAY="60000")
    admin = stomp_peer()
    admin.subscribe("/temp-queue/browse", "replies")
    (copy,) = _browse(admin, "/temp-queue/browse", 1)
    assert copy.body == "later"
    admin.send(MANAGEMENT, "", AMQ_SCHEDULER_ACTION="REMOVEALL")


def test_management_messages_are_not_delivered_and_bad_actions_are_errors(stomp_peer):
    listener = stomp_peer()
    listener.subscribe("/topic/ActiveMQ.Scheduler.>", "m")
    admin = stomp_peer()
    admin.send(MANAGEMENT, "", AMQ_SCHEDULER_ACTION="REMOVE", scheduledJobId="ID:none-1")
    admin.conn.send(MANAGEMENT, "", headers={"AMQ_SCHEDULER_ACTION": "PURGE"})
    admin.inbox.wait_disconnected()
    (error,) = admin.inbox.errors
    assert "AMQ_SCHEDULER_ACTION must be BROWSE, REMOVE or REMOVEALL" in error.headers["message"]
    marker = stomp_peer()
    marker.send("/topic/ActiveMQ.Scheduler.Other", "marker")  # sent after: arrives after
    assert [m.body for m in listener.inbox.wait_messages(1)] == ["marker"]
    assert listener.inbox.bodies() == ["marker"]


def test_a_removal_survives_a_kill_9(start_broker_process, stomp_peer, tmp_path):
    data_dir = tmp_path / "kept"
    broker = start_broker_process(data_dir)
    producer = stomp_peer(port=broker.port)
    producer.send("/queue/jobs", "doomed", persistent="true", AMQ_SCHEDULED_DELAY="1500")
    producer.send("/queue/jobs", "kept", persistent="true", AMQ_SCHEDULED_DELAY="2000")
    producer.subscribe("/queue/replies", "replies")
    browsed = _browse(producer, "/queue/replies", 2)
    job_id = browsed[0].headers["scheduledJobId"]
    producer.send(MANAGEMENT, "", AMQ_SCHEDULER_ACTION="REMOVE", scheduledJobId=job_id)
    assert broker.stop(signal.SIGKILL) == -signal.SIGKILL

    restarted = start_broker_process(data_dir)
    consumer = stomp_peer(port=restarted.port)
    consumer.subscribe("/queue/jobs", "j")
    assert [m.body for m in consumer.inbox.wait_messages(1, timeout=8)] == ["kept"]
    assert consumer.inbox.bodies() == ["kept"]
