"""Converters between the client API formats, through chat completions as the hub: pure
functions and per-stream state machines over parsed JSON (no I/O)."""


class ConversionError(Exception):
    """A request that cannot be converted; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
