"""PHP `serialize()` values in post meta, decoded safely.

phpserialize does the parsing. It never calls PHP code and, with `object_hook=phpobject`, only
builds an inert record of an object's class name and properties. We bound size and depth, require
the whole input to be consumed, and turn the result into JSON-shaped values.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import phpserialize

_SCALAR_PREFIXES = ("s:", "i:", "d:", "b:")
_CONTAINER_PREFIXES = ("a:", "O:", "C:")


def looks_serialized(raw: str) -> bool:
    """The test WordPress's `is_serialized()` makes, so we decode exactly what WordPress would."""
    s = raw.strip()
    if s == "N;":
        return True
    if len(s) < 4 or s[1] != ":":
        return False
    if s.startswith(_CONTAINER_PREFIXES):
        return s.endswith("}")
    if s.startswith(_SCALAR_PREFIXES):
        return s.endswith(";")
    return False


@dataclass(frozen=True, slots=True)
class Decoded:
    ok: bool
    value: Any = None
    error: str | None = None
    # JSON Pointers (RFC 6901) into `value` of numbers JSON cannot carry, given as PHP prints them:
    # integers beyond 64 bits as their digits, INF/-INF/NAN floats as those words.
    as_text: tuple[str, ...] = ()


NOT_SERIALIZED = Decoded(False)


class _TooDeep(Exception):
    pass


def decode_php(raw: str, *, max_bytes: int, max_depth: int) -> Decoded:
    """Decode `raw` if it is PHP-serialized; never raises."""
    if not looks_serialized(raw):
        return NOT_SERIALIZED
    data = raw.strip().encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        return Decoded(False, error=f"not decoded: {len(data)} bytes is over mapping.max_decode_bytes")
    # Each nesting level needs one "{"; counting them is a cheap upper bound on depth that keeps
    # hostile input from reaching the recursive parser at all.
    if data.count(b"{") > max_depth and _brace_depth(data) > max_depth:
        return Decoded(False, error=f"not decoded: nested deeper than mapping.max_decode_depth ({max_depth})")
    try:
        fp = io.BytesIO(data)
        value = phpserialize.load(fp, decode_strings=True, object_hook=phpserialize.phpobject)
        if fp.read(1):
            return Decoded(False, error="malformed PHP serialization: trailing data after the value")
        as_text: list[str] = []
        converted = _to_json(value, max_depth, as_text, [])
        return Decoded(True, converted, as_text=tuple(as_text))
    except _TooDeep:
        return Decoded(False, error=f"not decoded: nested deeper than mapping.max_decode_depth ({max_depth})")
    except RecursionError:
        return Decoded(False, error="not decoded: nested too deeply")
    except UnicodeDecodeError:
        return Decoded(False, error="malformed PHP serialization: a string is not valid UTF-8")
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        return Decoded(False, error=f"malformed PHP serialization: {exc}")


def _brace_depth(data: bytes) -> int:
    depth = best = 0
    for b in data:
        if b == 0x7B:
            depth += 1
            best = max(best, depth)
        elif b == 0x7D:
            depth -= 1
    return best


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _to_json(value: Any, depth_left: int, as_text: list[str], path: list[str]) -> Any:
    """JSON-shaped `value`; numbers JSON cannot carry become text, their paths go to `as_text`.
    `path` is the stack of keys above `value` (only read when such a number turns up)."""
    t = type(value)
    if t is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        as_text.append(_pointer(path))
        return str(value)
    if t is float:
        if math.isfinite(value):
            return value
        as_text.append(_pointer(path))
        return "NAN" if math.isnan(value) else ("INF" if value > 0 else "-INF")
    if isinstance(value, dict):
        if depth_left <= 0:
            raise _TooDeep()
        keys = list(value)
        if keys == list(range(len(keys))):
            out_list = []
            for k, v in value.items():
                path.append(str(k))
                out_list.append(_to_json(v, depth_left - 1, as_text, path))
                path.pop()
            return out_list
        return _members(value.items(), {}, depth_left, as_text, path)
    if isinstance(value, phpserialize.phpobject):
        if depth_left <= 0:
            raise _TooDeep()
        return _members(value.__php_vars__.items(), {"__php_class__": value.__name__}, depth_left, as_text, path)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def _members(items: Any, out: dict[str, Any], depth_left: int, as_text: list[str], path: list[str]) -> dict[str, Any]:
    for k, v in items:
        key = k.decode("utf-8") if isinstance(k, bytes) else str(k)
        path.append(key)
        out[key] = _to_json(v, depth_left - 1, as_text, path)
        path.pop()
    return out


def _pointer(path: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)
