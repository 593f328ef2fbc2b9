"""openformers.logging: the names and behaviour of transformers.utils.logging, for the "openformers" logger."""

import io
import logging as std_logging
import os
import subprocess
import sys

import pytest

from openformers import logging

reference = pytest.importorskip("transformers.utils.logging")

PUBLIC = [
    "get_logger", "get_verbosity", "set_verbosity", "set_verbosity_debug", "set_verbosity_info",
    "set_verbosity_warning", "set_verbosity_error", "disable_default_handler", "enable_default_handler",
    "add_handler", "remove_handler", "enable_propagation", "disable_propagation", "enable_explicit_format",
    "reset_format", "warning_advice", "warning_once", "info_once", "disable_progress_bar", "enable_progress_bar",
    "is_progress_bar_enabled", "captureWarnings", "get_log_levels_dict", "tqdm", "set_tqdm_hook",
    "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "NOTSET",
]


@pytest.fixture(autouse=True)
def restore_library_logger():
    """Each test starts from the state a fresh process has, and leaves no handler or level behind."""
    logging._reset()
    library = std_logging.getLogger("openformers")
    propagate = library.propagate
    yield
    logging._reset()
    library.propagate = propagate
    logging.enable_progress_bar()


@pytest.mark.parametrize("name", PUBLIC)
def test_the_reference_names_exist(name):
    assert hasattr(reference, name)
    assert hasattr(logging, name)
    if name.isupper():
        assert getattr(logging, name) == getattr(reference, name)


def test_verbosity_levels_round_trip():
    assert logging.get_verbosity() == logging.WARNING  # the reference's default
    for setter, level in [(logging.set_verbosity_info, 20), (logging.set_verbosity_debug, 10),
                          (logging.set_verbosity_error, 40), (logging.set_verbosity_warning, 30)]:
        setter()
        assert logging.get_verbosity() == level
    logging.set_verbosity(logging.CRITICAL)
    assert logging.get_verbosity() == 50 == logging.FATAL
    assert logging.get_log_levels_dict() == reference.get_log_levels_dict()


def test_library_loggers_live_under_openformers():
    logger = logging.get_logger("openformers.pipelines")
    assert logger.name == "openformers.pipelines" and logger.parent.name == "openformers"
    assert logging.get_logger().name == "openformers"
    stream = io.StringIO()
    handler = std_logging.StreamHandler(stream)
    logging.add_handler(handler)
    logging.disable_default_handler()
    try:
        logging.set_verbosity_info()
        logger.info("loaded %d shards", 3)
        logger.debug("not shown at INFO")
        logging.set_verbosity_error()
        logger.warning("not shown at ERROR")
    finally:
        logging.remove_handler(handler)
        logging.enable_default_handler()
    assert stream.getvalue() == "loaded 3 shards\n"
    with pytest.raises(ValueError, match="is not a handler"):
        logging.remove_handler(handler)


def test_explicit_format_and_reset():
    stream = io.StringIO()
    handler = std_logging.StreamHandler(stream)
    logging.add_handler(handler)
    try:
        logging.enable_explicit_format()
        logging.get_logger("openformers.test").warning("careful")
        logging.reset_format()
        logging.get_logger("openformers.test").warning("plain")
    finally:
        logging.remove_handler(handler)
    first, second = stream.getvalue().splitlines()
    assert first.startswith("[WARNING|test_logging.py:") and first.endswith(" >> careful")
    assert second == "plain"


def test_propagation_switches():
    logging.get_logger()
    assert std_logging.getLogger("openformers").propagate is (os.environ.get("CI", "").upper() in {"1", "TRUE"})
    logging.enable_propagation()
    assert std_logging.getLogger("openformers").propagate is True
    logging.disable_propagation()
    assert std_logging.getLogger("openformers").propagate is False


def test_warning_once_and_advice(monkeypatch):
    stream = io.StringIO()
    handler = std_logging.StreamHandler(stream)
    logging.add_handler(handler)
    logger = logging.get_logger("openformers.once")
    try:
        for _ in range(3):
            logger.warning_once("said once")
        logger.warning_once("another message")
        logging.warning_once(logger, "said once")  # the module function is the same method
        logger.warning_advice("advice")
        monkeypatch.setenv("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        logger.warning_advice("silenced advice")
    finally:
        logging.remove_handler(handler)
    assert stream.getvalue().splitlines() == ["said once", "another message", "advice"]


@pytest.mark.parametrize(
    "environment, level",
    [({"OPENFORMERS_VERBOSITY": "info"}, 20), ({"TRANSFORMERS_VERBOSITY": "error"}, 40),
     ({"OPENFORMERS_VERBOSITY": "debug", "TRANSFORMERS_VERBOSITY": "error"}, 10), ({}, 30)],
    ids=["openformers", "transformers", "openformers-wins", "default"],
)
def test_verbosity_from_the_environment(environment, level):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY")} | environment
    code = "from openformers import logging; print(logging.get_verbosity())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(result.stdout) == level


def test_an_unknown_verbosity_is_reported():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY")} | {"OPENFORMERS_VERBOSITY": "loud"}
    code = "from openformers import logging; print(logging.get_verbosity())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(result.stdout) == 30 and "OPENFORMERS_VERBOSITY=loud" in result.stderr


def test_progress_bars_switch_off_and_on(capsys):
    from huggingface_hub.utils import are_progress_bars_disabled

    from openformers.training.callbacks import ProgressCallback

    assert logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    assert not logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    bar = logging.tqdm(total=5)
    bar.update(2)
    assert bar.disable and bar.n == 0  # a disabled tqdm does not count, as tqdm itself behaves
    bar.close()

    class State:
        is_world_process_zero, max_steps, global_step = True, 4, 0

    callback = ProgressCallback()
    callback.on_train_begin(None, State(), None)
    assert callback.bar.disable
    State.global_step = 2
    callback.on_step_end(None, State(), None)
    callback.on_train_end(None, State(), None)
    assert capsys.readouterr().err == ""

    logging.enable_progress_bar()
    assert logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    assert not logging.tqdm(total=5, file=io.StringIO()).disable


def test_the_reference_import_paths():
    from openformers.utils import logging as from_utils  # `from transformers.utils import logging`

    import openformers

    assert from_utils is logging is openformers.logging


def test_detail_verbosity_names_the_logger_and_line():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY")} | {"TRANSFORMERS_VERBOSITY": "detail"}
    code = "from openformers import logging; logging.get_logger('openformers.x').debug('hello')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stderr.startswith("DEBUG [openformers.x:1] ") and result.stderr.endswith(" hello\n")


def test_info_once_and_captured_warnings():
    import warnings

    stream = io.StringIO()
    handler = std_logging.StreamHandler(stream)
    logging.add_handler(handler)
    logging.set_verbosity_info()
    logger = logging.get_logger("openformers.info")
    try:
        logger.info_once("loaded")
        logger.info_once("loaded")
        logging.captureWarnings(True)
        py_warnings = std_logging.getLogger("py.warnings")
        py_warnings.addHandler(handler)
        warnings.warn("through logging", UserWarning)
    finally:
        logging.captureWarnings(False)
        py_warnings.removeHandler(handler)
        logging.remove_handler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "loaded" and lines.count("loaded") == 1
    assert any("UserWarning: through logging" in line for line in lines[1:])


def test_a_tqdm_hook_makes_the_bars():
    made = []

    def hook(factory, args, kwargs):
        made.append(kwargs.get("total"))
        return factory(*args, **kwargs, file=io.StringIO())

    assert logging.set_tqdm_hook(hook) is None
    try:
        bar = logging.tqdm(total=7)
        bar.update(3)
        assert made == [7] and bar.n == 3
    finally:
        assert logging.set_tqdm_hook(None) is hook
