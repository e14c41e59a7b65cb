"""The Python interpreter `refract dev` runs projects with (the `interpreted` world).

componentize-py takes seconds to build a component, too long for every save.
`refract dev` builds this module into a component once; on each save it
appends the project's ``.py`` files to a copy of it (a ``refract:source``
section), and the host hands them back through ``source.files()``. On its
first call an instance imports the project's ``app`` module from those files
and serves its ``Projection``, as a component built from ``app.py`` would.

Only modules imported here while the component is built can be imported by a
project at run time (the component has no file system then): the helper, and
the standard library modules below. A project that needs another one is built
the usual way (``plugins/python/build``), or the module is added here.
"""

import importlib.abc
import importlib.machinery
import os
import importlib.util
import linecache
import sys
import traceback

# The standard library a projection may use, imported at build time.
import base64  # noqa: F401
import bisect  # noqa: F401
import calendar  # noqa: F401
import collections  # noqa: F401
import copy  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import enum  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import json  # noqa: F401
import math  # noqa: F401
import operator  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import textwrap  # noqa: F401
import typing  # noqa: F401
import uuid  # noqa: F401

import refract  # noqa: F401
from wit_world.imports import host, source, types as wit


class _Files(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the project's modules from the files the host handed over."""

    def __init__(self, files):
        self.files = files

    def find_spec(self, name, path=None, target=None):
        base = name.replace(".", "/")
        for origin, package in ((base + ".py", False), (base + "/__init__.py", True)):
            if origin in self.files:
                return importlib.util.spec_from_loader(name, self, origin=origin, is_package=package)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        origin = module.__spec__.origin
        module.__file__ = origin
        exec(compile(self.files[origin], origin, "exec"), module.__dict__)


_projection = None
_files = {}


def _own_frames(err):
    """The frames of ``err``'s traceback in the project's own files. Their
    lines come from ``linecache``, filled from the files handed over: looking
    a line up on disk would reach for the file system, and the host reports
    a projection that does so as such."""
    tb = traceback.walk_tb(err.__traceback__)
    frames = traceback.StackSummary.extract(tb, lookup_lines=False)
    return traceback.StackSummary.from_list([f for f in frames if f.filename in _files])


def _report(err):
    """Logs ``err`` at the project's own lines: its frames, then the line a
    failed load repeats (``SyntaxError: ... (app.py, line 3)``)."""
    frames = _own_frames(err)
    text = "".join(["Traceback (the project's own files):\n", *frames.format(), *traceback.format_exception_only(err)])
    host.log(wit.LogLevel.ERROR, text.rstrip())
    where = f" ({frames[-1].filename}:{frames[-1].lineno}, in {frames[-1].name})" if frames else ""
    host.log(wit.LogLevel.ERROR, f"{type(err).__name__}: {err}{where}")


def _load():
    global _projection
    if _projection is None:
        files = dict(source.files())
        _files.update(files)
        for path, text in files.items():
            # mtime None: linecache never checks these against the disk.
            linecache.cache[path] = (len(text), None, text.splitlines(True), path)
        if "app.py" not in files:
            raise RuntimeError("refract dev handed over no app.py")
        # The project's files first, and no search of sys.path: there is no
        # file system at run time, and looking costs a denied capability.
        sys.meta_path[:] = [_Files(files)] + [f for f in sys.meta_path if f is not importlib.machinery.PathFinder]
        try:
            app = importlib.import_module("app")
        except ModuleNotFoundError as err:
            if err.name in files or (err.name or "").replace(".", "/") + "/__init__.py" in files:
                raise
            raise ModuleNotFoundError(
                f"No module named {err.name!r} in refract dev's interpreter: it has the project's own files, "
                "`refract` and the standard library modules plugins/python/sdk/refract_interpreter.py imports",
                name=err.name,
            ).with_traceback(err.__traceback__) from None
        if not hasattr(app, "Projection"):
            raise RuntimeError("app.py defines no `Projection` (end it with `Projection = refract.export(YourClass)`)")
        _projection = app.Projection()
    return _projection


class Projection:
    """The exported ``projection`` interface, served by the project's own."""

    def describe(self):
        try:
            return _load().describe()
        except Exception as err:
            # Through the `log` import, then exit: an exception raised from
            # here would be printed to stderr, which opens the file system.
            _report(err)
            os._exit(1)

    def handle(self, batch):
        return _load().handle(batch)
