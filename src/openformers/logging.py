"""The library's logging and progress-bar switches, with the names of `transformers.utils.logging`.

    from openformers import logging
    logging.set_verbosity_info()            # or set OPENFORMERS_VERBOSITY=info (TRANSFORMERS_VERBOSITY works too)
    logger = logging.get_logger(__name__)   # a logger under the library's "openformers" logger
    logging.disable_progress_bar()          # the Trainer's bar and Hub downloads stay quiet

Every logger of the library lives under the "openformers" logger. It gets one stderr handler the first time
one of these functions is used, at the level the environment asks for (WARNING by default), and does not
pass records on to the root logger unless `enable_propagation()` is called (or CI=1 is set, as in the reference).
"""

import logging
import os
import sys
import threading
from logging import CRITICAL, DEBUG, ERROR, FATAL, INFO, NOTSET, WARN, WARNING  # noqa: F401  (re-exported)

from tqdm import auto as _tqdm_auto

LIBRARY_NAME = "openformers"
VERBOSITY_VARIABLES = ("OPENFORMERS_VERBOSITY", "TRANSFORMERS_VERBOSITY")  # the first one set wins
ADVISORY_VARIABLES = ("OPENFORMERS_NO_ADVISORY_WARNINGS", "TRANSFORMERS_NO_ADVISORY_WARNINGS")

log_levels = {
    "detail": DEBUG,  # DEBUG, with the logger name and line number in every record
    "debug": DEBUG,
    "info": INFO,
    "warning": WARNING,
    "error": ERROR,
    "critical": CRITICAL,
}

_lock = threading.Lock()
_default_handler: logging.Handler | None = None
_warned_once: set = set()
_tqdm_hook = None  # set_tqdm_hook's function, which makes every bar
_progress_bars_enabled = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() not in {"1", "ON", "YES", "TRUE"}


def _verbosity_setting() -> tuple[str | None, str | None]:
    """(the variable, its value) of the first verbosity variable that is set, or (None, None)."""
    for variable in VERBOSITY_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return variable, value
    return None, None


def _default_level() -> int:
    variable, value = _verbosity_setting()
    if value is None:
        return WARNING
    if value.lower() in log_levels:
        return log_levels[value.lower()]
    logging.getLogger().warning(f"Unknown option {variable}={value}; it must be one of: {', '.join(log_levels)}.")
    return WARNING


def _library_logger() -> logging.Logger:
    return logging.getLogger(LIBRARY_NAME)


def _configure() -> logging.Handler:
    """Give the library's logger its stderr handler and level, once; return that handler."""
    global _default_handler
    with _lock:
        if _default_handler is not None:
            return _default_handler
        if sys.stderr is None:  # frozen apps without a console (pythonw) have no stderr
            sys.stderr = open(os.devnull, "w", encoding="utf-8")
        handler = logging.StreamHandler()
        handler.flush = sys.stderr.flush
        detail = _verbosity_setting()[1] == "detail"
        pattern = "[openformers] %(message)s"
        if detail:  # "detail" names the logger and line of every record
            pattern = "%(levelname)s [%(name)s:%(lineno)s] %(asctime)s %(message)s"
        handler.setFormatter(logging.Formatter(pattern))
        library = _library_logger()
        library.addHandler(handler)
        library.setLevel(_default_level())
        library.propagate = os.environ.get("CI", "").upper() in {"1", "ON", "YES", "TRUE"}
        _default_handler = handler
        return handler


def _reset() -> None:
    """Undo `_configure` (for tests): the handler comes off and the level goes back to NOTSET."""
    global _default_handler
    with _lock:
        if _default_handler is None:
            return
        _library_logger().removeHandler(_default_handler)
        _library_logger().setLevel(NOTSET)
        _default_handler = None


def get_log_levels_dict() -> dict[str, int]:
    return log_levels


def get_logger(name: str | None = None) -> logging.Logger:
    """The logger called `name` (the library's own logger when None), with `warning_once`, `info_once` and
    `warning_advice` methods as the reference's loggers have."""
    _configure()
    logger = logging.getLogger(name or LIBRARY_NAME)
    # Bound on this logger only: the logging module's Logger class is left as it is.
    for method in (warning_advice, warning_once, info_once):
        if method.__name__ not in vars(logger):
            setattr(logger, method.__name__, method.__get__(logger))
    return logger


def get_verbosity() -> int:
    """The level of the library's logger, as an int (DEBUG=10 ... CRITICAL=50)."""
    _configure()
    return _library_logger().getEffectiveLevel()


def set_verbosity(verbosity: int) -> None:
    """Set the level of the library's logger: DEBUG, INFO, WARNING, ERROR or CRITICAL (FATAL), or their ints."""
    _configure()
    _library_logger().setLevel(verbosity)


def set_verbosity_debug() -> None:
    set_verbosity(DEBUG)


def set_verbosity_info() -> None:
    set_verbosity(INFO)


def set_verbosity_warning() -> None:
    set_verbosity(WARNING)


def set_verbosity_error() -> None:
    set_verbosity(ERROR)


def disable_default_handler() -> None:
    """Take the library's stderr handler off its logger (records still reach handlers added with add_handler)."""
    _library_logger().removeHandler(_configure())


def enable_default_handler() -> None:
    _library_logger().addHandler(_configure())


def add_handler(handler: logging.Handler) -> None:
    if not isinstance(handler, logging.Handler):
        raise TypeError(f"add_handler expects a logging.Handler, got {type(handler).__name__}.")
    _configure()
    _library_logger().addHandler(handler)


def remove_handler(handler: logging.Handler) -> None:
    _configure()
    if handler not in _library_logger().handlers:
        raise ValueError(f"remove_handler: {handler!r} is not a handler of the {LIBRARY_NAME!r} logger.")
    _library_logger().removeHandler(handler)


def disable_propagation() -> None:
    """Keep the library's records from reaching the root logger (the default)."""
    _configure()
    _library_logger().propagate = False


def enable_propagation() -> None:
    """Pass the library's records on to the root logger too; disable_default_handler() avoids printing them twice."""
    _configure()
    _library_logger().propagate = True


def enable_explicit_format() -> None:
    """Write every record as `[LEVEL|file:line] time >> message`, on every handler of the library's logger."""
    for handler in _library_logger().handlers:
        handler.setFormatter(logging.Formatter("[%(levelname)s|%(filename)s:%(lineno)s] %(asctime)s >> %(message)s"))


def reset_format() -> None:
    """Back to logging's plain format (the message alone) on every handler of the library's logger."""
    for handler in _library_logger().handlers:
        handler.setFormatter(None)


def captureWarnings(capture: bool) -> None:  # noqa: N802  (the reference's name)
    """Route the `warnings` module through the "py.warnings" logger, at the library's level and with its handler."""
    logger = get_logger("py.warnings")
    if not logger.handlers:
        logger.addHandler(_configure())
    logger.setLevel(_library_logger().level)
    logging.captureWarnings(capture)


def warning_advice(logger: logging.Logger, *args, **kwargs) -> None:
    """`logger.warning(...)`, unless OPENFORMERS_NO_ADVISORY_WARNINGS (or TRANSFORMERS_...) is set."""
    if any(os.environ.get(variable) for variable in ADVISORY_VARIABLES):
        return
    logger.warning(*args, **kwargs)


def _once(logger: logging.Logger, level: int, args: tuple, kwargs: dict) -> None:
    key = (logger.name, level, args, tuple(sorted(kwargs.items())))
    try:
        if key in _warned_once:
            return
        _warned_once.add(key)
    except TypeError:  # an unhashable argument: no way to remember it, so it is logged every time
        pass
    logger.log(level, *args, **kwargs)


def warning_once(logger: logging.Logger, *args, **kwargs) -> None:
    """`logger.warning(...)` the first time these arguments are logged by this logger, and never again."""
    kwargs.setdefault("stacklevel", 3)  # name the caller's line, not this helper's
    _once(logger, WARNING, args, kwargs)


def info_once(logger: logging.Logger, *args, **kwargs) -> None:
    """`logger.info(...)` the first time these arguments are logged by this logger, and never again."""
    kwargs.setdefault("stacklevel", 3)
    _once(logger, INFO, args, kwargs)


# -- progress bars ------------------------------------------------------------------------------------------


def is_progress_bar_enabled() -> bool:
    return _progress_bars_enabled


def enable_progress_bar() -> None:
    """Show the library's progress bars (the Trainer's, and huggingface_hub's while downloading)."""
    global _progress_bars_enabled
    _progress_bars_enabled = True
    from huggingface_hub import utils as hub_utils

    hub_utils.enable_progress_bars()


def disable_progress_bar() -> None:
    """Hide the library's progress bars (the Trainer's, and huggingface_hub's while downloading)."""
    global _progress_bars_enabled
    _progress_bars_enabled = False
    from huggingface_hub import utils as hub_utils

    hub_utils.disable_progress_bars()


def set_tqdm_hook(hook):
    """Make the library's bars through `hook(factory, args, kwargs)` (None: tqdm itself); returns the previous hook."""
    global _tqdm_hook
    previous, _tqdm_hook = _tqdm_hook, hook
    return previous


def tqdm(*args, **kwargs):
    """A `tqdm.auto.tqdm` bar that is silent while progress bars are disabled.

    A disabled bar is still a real tqdm object (its counters, update(), close() and write() work), so the
    code that drives it needs no branch.
    """
    if not _progress_bars_enabled:
        kwargs["disable"] = True
    if _tqdm_hook is not None:
        return _tqdm_hook(_tqdm_auto.tqdm, args, kwargs)
    return _tqdm_auto.tqdm(*args, **kwargs)
