"""The command-line contract every detpre tool follows (DEVELOPERS.md).

``main(argv) -> int`` returns 0 when everything was done, 1 when the result is incomplete
(a write failed, a run diverged or did not finish), 2 for bad input (a file, key or value
that cannot be used). Either error is one ``error:`` line on stderr that names the file, key
or value, and the same line in the log when one is open. :func:`cli_main` wraps a tool's
``main`` so that it holds for every exception a tool is expected to meet.
"""

import errno
import functools
import logging
import sys
from typing import Callable, Optional, Sequence

from .file_io import WriteError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INCOMPLETE",
    "EXIT_OK",
    "LOGGER_NAMES",
    "WRITE_ERRNOS",
    "cli_main",
    "exit_code",
    "one_line",
    "report_error",
    "setup_tool_logging",
]

EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT = 0, 1, 2
#: The loggers of detpre's messages: its package's and the numpy-only evaluator's.
LOGGER_NAMES = ("detpre", "kaisteval")
#: Errors of a write that could not be done (as opposed to an input that could not be read).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EDQUOT})
_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"

logger = logging.getLogger("detpre")


class _ToolHandler(logging.StreamHandler):
    """The stderr handler of :func:`setup_tool_logging` (recognised, so it is added once). It
    writes to whatever ``sys.stderr`` is when a message comes, as ``print`` does."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_tool_logging(level: int = logging.INFO) -> None:
    """Progress of detpre's library code on stderr, formatted as Detectron2's log lines, for tools
    that do not train (``tools/train_net.py`` logs through Detectron2's set-up instead)."""
    for name in LOGGER_NAMES:
        log = logging.getLogger(name)
        if not any(isinstance(h, _ToolHandler) for h in log.handlers):
            handler = _ToolHandler()
            handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S"))
            log.addHandler(handler)
        log.setLevel(min(log.level or level, level))


def remove_tool_logging() -> None:
    """Undo :func:`setup_tool_logging` (before Detectron2's set-up takes the loggers over)."""
    for name in LOGGER_NAMES:
        log = logging.getLogger(name)
        for handler in [h for h in log.handlers if isinstance(h, _ToolHandler)]:
            log.removeHandler(handler)


def _logs_to_a_file(log: logging.Logger) -> bool:
    """Whether a handler of ``log`` writes to a named file (Detectron2's ``log.txt`` stream)."""
    for handler in log.handlers:
        name = None if isinstance(handler, _ToolHandler) else getattr(getattr(handler, "stream", None), "name", None)
        if isinstance(name, str) and not name.startswith("<"):
            return True
    return False


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line.

    An exception re-raised from a DataLoader worker carries the worker's whole traceback;
    its last line is the original message.
    """
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text and lines:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    return "; ".join(lines) or type(error).__name__


def exit_code(error: BaseException) -> Optional[int]:
    """The exit status of a tool that met ``error``; None for an exception that is a bug."""
    if isinstance(error, (WriteError, FloatingPointError)):
        return EXIT_INCOMPLETE
    if isinstance(error, (ValueError, KeyError, OSError)):
        return EXIT_BAD_INPUT
    return None


def report_error(error: BaseException) -> None:
    """One ``error:`` line on stderr, and the same line in the run's log file if one is open."""
    message = one_line(error)
    if _logs_to_a_file(logger):
        logger.error(message)
    print(f"error: {message}", file=sys.stderr, flush=True)


def cli_main(main: Callable[[Optional[Sequence[str]]], int]) -> Callable[[Optional[Sequence[str]]], int]:
    """Make ``main`` a tool of the contract: detpre's progress visible (:func:`setup_tool_logging`),
    and the contract's exit status for expected errors, after one line."""

    @functools.wraps(main)
    def wrapper(argv: Optional[Sequence[str]] = None) -> int:
        setup_tool_logging()
        try:
            return main(argv)
        except Exception as e:  # noqa: BLE001  (mapped to an exit status, or re-raised)
            code = exit_code(e)
            if code is None:
                raise
            report_error(e)
            return code

    return wrapper
