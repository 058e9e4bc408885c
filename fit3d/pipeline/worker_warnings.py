"""A worker process's :mod:`warnings`, said by the calling process (:mod:`fit3d.pipeline.workers`).

A spawned worker starts with the interpreter's default filters, not those the caller set in code,
and writes what it shows to its own stderr: not in the command line's form, onto its progress bar,
once per worker. So the caller's filters are copied into each worker when it starts
(:func:`portable_filters`, :func:`apply_filters`: a warning the caller silenced, by category,
message or module, stays silent, and one it made an error raises in the worker as it would in the
caller's own batches); what a worker then shows is sent to the caller as a log record
(:func:`send_warning`) and shown there by its ``warnings.showwarning`` (the command line's), each
message, category and line once (:class:`ShownOnce`).
"""

from __future__ import annotations

import logging
import sys
import warnings


def warning_category(module: str, qualname: str, load: bool = False) -> type[Warning] | None:
    """The warning class named by ``module`` and ``qualname`` (a nested class's dotted name), or
    None. A worker's main module is ``__mp_main__`` (spawn), the caller's ``__main__``: either
    name finds the other. With ``load`` the module is imported when it is not yet (a worker,
    rebuilding a filter); without, only modules already imported are looked in (the caller's
    reading thread imports nothing)."""
    names = [module] + [{"__mp_main__": "__main__", "__main__": "__mp_main__"}[module]] \
        if module in ("__main__", "__mp_main__") else [module]
    obj = next((sys.modules[n] for n in names if n in sys.modules), None)
    if obj is None and load:
        try:
            import importlib

            obj = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - (a module of the caller's own that a worker cannot import)
            return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, Warning) else None


def portable_filters() -> list[tuple]:
    """This process's :data:`warnings.filters` as plain data a worker rebuilds
    (:func:`apply_filters`): ``(action, message pattern, category module, category name, module
    pattern, line)`` each, highest priority first."""
    def pattern(x) -> str:  # (a compiled expression, a plain string, or None for any)
        return getattr(x, "pattern", x) or ""

    return [(action, pattern(message), category.__module__, category.__qualname__, pattern(module), lineno)
            for action, message, category, module, lineno in warnings.filters]


def apply_filters(filters: list[tuple]) -> None:
    """Replace this process's warning filters with ``filters`` (:func:`portable_filters`); a filter
    whose category cannot be found here is left out."""
    warnings.resetwarnings()
    for action, message, cat_module, cat_name, module, lineno in filters:
        category = warning_category(cat_module, cat_name, load=True)
        if category is not None:
            warnings.filterwarnings(action, message, category, module, lineno, append=True)


def send_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A worker's :func:`warnings.showwarning`: the warning to the calling process, as a log record
    to this process's root handlers (the queue to the caller) that names its category."""
    record = logging.LogRecord("py.warnings", logging.WARNING, str(filename), lineno, str(message), None, None)
    record.fit3d_warning = (category.__module__, category.__qualname__)
    for handler in logging.getLogger().handlers:
        handler.handle(record)


class ShownOnce:
    """The calling process's end: :meth:`show` a worker's warning record (:func:`send_warning`)
    through this process's :func:`warnings.showwarning`, once for each message, category and line
    whichever worker sent it (the workers' filters decided already). A category not imported here
    is shown as a :class:`UserWarning`."""

    def __init__(self) -> None:
        self._shown: set[tuple] = set()

    def show(self, record: logging.LogRecord) -> None:
        """Show the warning ``record`` carries, unless shown already."""
        key = (record.getMessage(), *record.fit3d_warning, record.pathname, record.lineno)
        if key in self._shown:
            return
        self._shown.add(key)
        category = warning_category(*record.fit3d_warning) or UserWarning
        warnings.showwarning(record.getMessage(), category, record.pathname, record.lineno)
