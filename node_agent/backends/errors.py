"""Errors a backend raises besides `Cancelled`, split by what the agent should do about them.

`BackendUnavailable`: the engine cannot be reached or is not ready (connection refused, timeout,
5xx); the job may succeed if retried later or elsewhere. `BackendError`: the engine answered and
refused the request (unknown model, bad parameters); retrying the same request will not help.
The runtime decides retries and what the customer sees; this module only names the cases.
"""

from __future__ import annotations


class BackendError(RuntimeError):
    """The inference engine refused or failed the request; retrying as is will not help."""


class BackendUnavailable(BackendError):
    """The inference engine could not be reached or is overloaded; a retry may succeed."""
