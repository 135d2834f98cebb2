"""Retrying a streaming provider request within a latency budget (shared by the cloud adapters).

On a phone line a retry is only worth it before anything reached the caller (a retried reply
would repeat words) and only while the budget leaves time for it: past that, the session's
cached filler or fallback serves the caller better than one more attempt.
"""

from __future__ import annotations


class Failure(Exception):
    """One attempt failed: why, whether another attempt may succeed, and how long to wait."""

    def __init__(
        self, reason: str, retryable: bool, wait: float, cause: BaseException | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.wait = wait
        self.__cause__ = cause


def may_retry(
    failure: Failure, produced: bool, attempt: int, max_attempts: int, remaining_s: float
) -> bool:
    return (
        failure.retryable
        and not produced
        and attempt < max_attempts
        and remaining_s > failure.wait + 0.05
    )
