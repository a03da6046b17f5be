"""Wire transcripts for message groups: ``JMSXGroupFirstForConsumer:true`` in MESSAGE frames.

The broker puts it in the frame head, after ``redelivered``, on the first message of a group
its consumer gets since the group became its own; every other frame goes without it. The same
in STOMP 1.0, 1.1 and 1.2. A SEND cannot set it: it is the broker's, per delivery.
"""

from __future__ import annotations

import pytest

FIRST = b"JMSXGroupFirstForConsumer:true\n"


def message(body: bytes, group: bytes, *, head: bytes = b"", seq: bytes = b"") -> bytes:
    """A normalised MESSAGE frame on /queue/wire.groups (ack:auto, subscription 0)."""
    return (
        b"MESSAGE\nsubscription:0\n"
        + head
        + b"message-id:*\ndestination:/queue/wire.groups\nexpires:0\npriority:4\ntimestamp:*\n"
        + (b"JMSXGroupID:" + group + b"\n" if group else b"")
        + (b"JMSXGroupSeq:" + seq + b"\n" if seq else b"")
        + b"content-length:%d\n\n" % len(body)
        + body
        + b"\0"
    )


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_first_message_of_a_group_carries_the_header(broker, raw_stomp, version):
    client = raw_stomp(broker.port)
    client.connect(version)
    client.send(
        b"SUBSCRIBE\nid:0\ndestination:/queue/wire.groups\n\n\0"
        b"SEND\ndestination:/queue/wire.groups\nJMSXGroupID:g\n\ng1\0"
        b"SEND\ndestination:/queue/wire.groups\nJMSXGroupID:g\n\ng2\0"
        b"SEND\ndestination:/queue/wire.groups\n\nx\0"
        b"SEND\ndestination:/queue/wire.groups\nJMSXGroupID:g\nJMSXGroupSeq:-1\n\nend\0"
        b"SEND\ndestination:/queue/wire.groups\nJMSXGroupID:g\n\nagain\0"
    )
    client.expect(message(b"g1", b"g", head=FIRST))
    client.expect(message(b"g2", b"g"))
    client.expect(message(b"x", b""))
    client.expect(message(b"end", b"g", seq=b"-1"))
    client.expect(message(b"again", b"g", head=FIRST))  # the group opened again


def test_a_send_cannot_set_the_header(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(
        b"SUBSCRIBE\nid:0\ndestination:/queue/wire.groups\n\n\0"
        b"SEND\ndestination:/queue/wire.groups\nJMSXGroupFirstForConsumer:true\n\nx\0"
        b"SEND\ndestination:/queue/wire.groups\nJMSXGroupID:g\n\ng1\0"
        b"SEND\ndestination:/queue/wire.groups\nJMSXGroupID:g\n"
        b"JMSXGroupFirstForConsumer:true\n\ng2\0"
    )
    client.expect(message(b"x", b""))
    client.expect(message(b"g1", b"g", head=FIRST))
    client.expect(message(b"g2", b"g"))
