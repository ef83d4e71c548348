"""The harness's one error type for bad input.

:class:`BadInput` carries one sentence naming the offending file (missing or corrupt model,
dataset, annotations or configuration file). The command line prints it on stderr and exits
with status 2, before LoadGen starts where possible.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # some samples failed (logs are still written)
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class BadInput(Exception):
    """Bad input: the message is one sentence that names the file."""
