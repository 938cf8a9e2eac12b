"""The Redis broker transport the worker consumes with: kombu's, safe to close after Celery collected it.

When the broker connection is lost, Celery collects the connection (its transport forgets the broker's
address) and then closes it. With a job running (a late-acked message), closing a channel requeues its
unacked messages, which builds a Redis client from that forgotten address: the pinned kombu raises
AttributeError there, Celery calls it unrecoverable and the worker shuts down. A collected channel has no
broker to talk to, so it is only marked closed; its unacked message stays in Redis, and the running job
acks it when it ends (the visibility timeout and the lost-message sweep cover a worker that dies first).
"""
from __future__ import annotations

from kombu.transport import redis

TRANSPORT = "worker.broker:Transport"


class Channel(redis.Channel):
    """kombu's Redis channel, closed without the broker once its connection was collected."""

    def close(self) -> None:
        if self.connection is not None and self.connection.client is None:  # collected after a broker loss
            self._closing = self.closed = True
            return
        super().close()


class Transport(redis.Transport):
    """kombu's Redis transport with that channel."""

    Channel = Channel
