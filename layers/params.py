"""param_str parsing for the data layers: JSON or a Python literal, never eval.

The prototxt generator writes JSON; the 2016 reference prototxts hold Python
dict literals (single quotes, True/False), so both are accepted. Each layer
declares its keys as a table of `Param`s; unknown or missing keys fail with
the list of valid keys, so a typo in a prototxt is an error at net setup, not
a default silently used for a 300k-iteration run.
"""
import ast
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from common.errors import InputError

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    convert: Callable[[Any], Any]   # checks and normalises a value, raises ValueError
    default: Any = REQUIRED


def as_str(v):
    if not isinstance(v, str) or not v:
        raise InputError(f"expected a non-empty string, got {v!r}")
    return v


def as_bool(v):
    if not isinstance(v, bool):
        raise InputError(f"expected true or false, got {v!r}")
    return v


def as_int(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"expected an integer, got {v!r}")
    return v


def as_seed(v):
    v = as_int(v)
    if not 0 <= v < 2 ** 32:
        raise InputError(f"expected an integer in [0, 2**32), got {v!r}")
    return v


def as_float(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"expected a finite number, got {v!r}")
    return float(v)


def as_floats(n):
    def convert(v):
        if not isinstance(v, (list, tuple)) or len(v) != n:
            raise InputError(f"expected a list of {n} numbers, got {v!r}")
        return tuple(as_float(x) for x in v)
    return convert


def optional(convert):
    return lambda v: None if v is None else convert(v)


def positive(convert):
    def check(v):
        v = convert(v)
        if v is not None and v < 1:
            raise InputError(f"expected a positive integer, got {v!r}")
        return v
    return check


def int_in(low, high):
    def convert(v):
        v = as_int(v)
        if not low <= v <= high:
            raise InputError(f"expected an integer in [{low}, {high}], got {v!r}")
        return v
    return convert


def one_of(*choices):
    def convert(v):
        if v not in choices:
            raise InputError(f"expected one of {list(choices)}, got {v!r}")
        return v
    return convert


def subset_list(choices):
    """A non-empty list of distinct names from `choices`, order kept."""
    def convert(v):
        if not isinstance(v, (list, tuple)) or not v:
            raise InputError(f"expected a non-empty list drawn from {list(choices)}, got {v!r}")
        bad = [x for x in v if x not in choices]
        if bad or len(set(v)) != len(v):
            raise InputError(f"expected distinct names drawn from {list(choices)}, got {list(v)!r}")
        return tuple(v)
    return convert


def decode(param_str):
    """The dict in param_str: JSON first, then a Python literal (ast, not eval)."""
    text = (param_str or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputError(f"param_str is nested too deeply to be a layer's parameters: "
                         f"{_shorten(text)}") from None
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except RecursionError:
            raise InputError(f"param_str is nested too deeply to be a layer's parameters: "
                             f"{_shorten(text)}") from None
        except (ValueError, SyntaxError, TypeError, MemoryError) as e:
            raise InputError(f"param_str is neither JSON nor a Python literal: "
                             f"{_shorten(text)} ({e})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError(f"param_str must be a dict with string keys, got {_shorten(text)}")
    return value


def _shorten(text, limit=200):
    """repr of text, cut to `limit` characters (a pathological param_str can be huge)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def parse(param_str, spec, owner="data layer"):
    """Decode param_str and check it against spec {key: Param}; returns a full dict."""
    given = decode(param_str)
    valid = ", ".join(sorted(spec))
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise InputError(f"{owner}: unknown param_str key(s) {unknown}; valid keys: {valid}")
    missing = sorted(k for k, p in spec.items() if p.default is REQUIRED and k not in given)
    if missing:
        raise InputError(f"{owner}: missing required param_str key(s) {missing}; valid keys: {valid}")
    out = {}
    for key, param in spec.items():
        if key not in given:
            out[key] = param.default
            continue
        try:
            out[key] = param.convert(given[key])
        except ValueError as e:
            raise InputError(f"{owner}: param_str key {key!r}: {e}") from None
    return out
