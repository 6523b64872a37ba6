"""A request refused, whatever the transport."""

from __future__ import annotations

import grpc


class Refusal(Exception):
    """A request refused, whatever the transport: the gRPC status and what the caller reads.
    The gRPC methods abort with it; the HTTP front maps it to its status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
