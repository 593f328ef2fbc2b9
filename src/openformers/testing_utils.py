"""CaptureLogger, the one name of the reference's testing_utils that its example scripts import (run_clm.py reads
the tokenizer's warnings through it)."""

import io
import logging


class CaptureLogger:
    """`with CaptureLogger(logger) as captured: ...`, then `captured.out` holds what the logger wrote meanwhile."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.io = io.StringIO()
        self.sh = logging.StreamHandler(self.io)
        self.out = ""

    def __enter__(self):
        self.logger.addHandler(self.sh)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.sh)
        self.out = self.io.getvalue()

    def __repr__(self) -> str:
        return f"captured: {self.out}\n"
