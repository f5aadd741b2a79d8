"""The SDK's exceptions; everything it raises on purpose derives from RunstreamError."""

__all__ = ["RunstreamError", "LimitError", "DeliveryError", "ApiError", "ApiUnreachable"]


class RunstreamError(Exception):
    """Root of the SDK's errors."""


class LimitError(RunstreamError, ValueError):
    """A name, value, row or file beyond a limit in ``schemas.limits`` (or of a wrong type)."""


class DeliveryError(RunstreamError):
    """Events could not be acknowledged by Kafka (or the gateway) within the wait."""


class ApiError(RunstreamError):
    """The query API answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ApiUnreachable(RunstreamError, ConnectionError):
    """The query API could not be reached (refused, reset, DNS, TLS): nothing was answered."""
