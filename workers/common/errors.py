"""The one exception a worker raises for a job it cannot do; it becomes the job's error chunk."""

from __future__ import annotations

from voicepod.protocol import ErrorDetail

# Codes shared by all workers; a worker may add its own (short, snake_case, stable: clients match on them).
INVALID_INPUT = "invalid_input"
INPUT_TOO_LARGE = "input_too_large"
INTERNAL = "internal_error"
OUT_OF_MEMORY = "out_of_memory"
OUTPUT_TOO_LARGE = "output_too_large"


class WorkerError(Exception):
    """A job-level failure with a stable ``code`` and a message meant for the caller.

    ``field`` names the input field at fault, when there is one.
    """

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def detail(self) -> ErrorDetail:
        return ErrorDetail(code=self.code, message=self.message, field=self.field)
