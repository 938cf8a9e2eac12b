"""RESP framing for a call sent pre-packed: the append of a batch step (JobStore).

A batch step's append names two keys per job. Framed once per job and kept, they cost the
client one join per call, where a general packer encodes every argument at every call.
"""
from __future__ import annotations


def bulk(value: bytes) -> bytes:
    """One argument as a RESP bulk string: $<length> CRLF <bytes> CRLF."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def array(count: int) -> bytes:
    """The head of a command of `count` arguments (its bulk strings follow)."""
    return b"*%d\r\n" % count
