"""Every error class the queue records names a real exception class, by one scheme.

A job's history says what went wrong as ``error_class``: the dotted path of the class (a task's own
exception, httpx's, or one in ``django_supaqueue.exceptions``), so that a reader, Django Tasks'
``TaskError.exception_class`` and a search for the name all find the same class. The names the
package records itself are literals in its Python and SQL; these tests read them from the source.
"""

import importlib
import inspect
import re
from pathlib import Path

import httpx

import django_supaqueue
from django_supaqueue import exceptions

PACKAGE = Path(django_supaqueue.__file__).parent
OUR_EXCEPTIONS = {
    name
    for name, obj in vars(exceptions).items()
    if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == exceptions.__name__
}
# A quoted dotted path into the package that ends in a class name: 'django_supaqueue.exceptions.X'.
DOTTED = re.compile(r"""["'](django_supaqueue(?:\.\w+)+\.[A-Z]\w*)["']""")
# A class of ours quoted by its bare name, as Python ("WorkerLost") or SQL ('WorkerLost') spells it.
BARE = re.compile(r"""(["'])(""" + "|".join(sorted(OUR_EXCEPTIONS)) + r""")\1""")


def sources() -> dict[str, str]:
    """The package's Python and SQL (statements in .sql files and in strings, migrations included)."""
    return {
        str(path.relative_to(PACKAGE)): path.read_text()
        for path in sorted(PACKAGE.rglob("*"))
        if path.suffix in (".py", ".sql")
    }


def test_every_error_class_path_in_the_code_names_an_exception_of_exceptions_py():
    found = {match for text in sources().values() for match in DOTTED.findall(text)}
    assert {
        "django_supaqueue.exceptions.HTTPError",
        "django_supaqueue.exceptions.HTTPConfigError",
        "django_supaqueue.exceptions.RateSlotMissed",
    } <= found  # the scan sees the HTTP handler's
    for path in sorted(found):
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name, None)
        assert inspect.isclass(cls), f"{path} names no class"
        if issubclass(cls, BaseException):
            assert module == exceptions.__name__, f"{path}: the package's errors live in exceptions.py"


def test_no_error_class_of_ours_is_recorded_by_its_bare_name():
    bare = [
        f"{where}: {match.group(0)}"
        for where, text in sources().items()
        if where != "exceptions.py"
        for match in BARE.finditer(text)
    ]
    assert bare == [], "record django_supaqueue.exceptions.<name>, not the bare name"


def test_an_httpx_error_is_recorded_by_a_path_httpx_exports():
    # The HTTP handler records "httpx." + the class name of whatever transport error it caught.
    pending = [httpx.TransportError]
    while pending:
        cls = pending.pop()
        assert getattr(httpx, cls.__name__, None) is cls, f"httpx.{cls.__name__} is not importable"
        pending.extend(cls.__subclasses__())
