"""Fitting an event under the broker's message size limit (kafka.oversize_policy: truncate).

Only the big free-text fields are cut: post_content (in the row and in `changes`), meta values and
previous values (also those in a post_snapshot's meta list).
What was cut is always flagged the same way, beside the cut field: `X_truncated`, `X_bytes` and
`X_sha256` of the full original, so a consumer knows to fetch it from WordPress. Pure: no I/O.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import orjson


def _cut(text: str, max_bytes: int) -> str:
    return text.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")


def _apply(event: dict[str, Any], cap: int) -> dict[str, Any]:
    e = copy.deepcopy(event)
    data = e.get("data", {})
    post = data.get("post")
    if isinstance(post, dict):
        _cut_field(post, "post_content", "content", cap)
    change = data.get("changes", {}).get("post_content")
    if isinstance(change, dict):
        for side in ("old", "new"):
            _cut_field(change, side, side, cap)
    if "meta_id" in data:
        _cut_meta(data, cap)
        _cut_field(data, "previous_value", "previous_value", cap)
    for item in data.get("meta", ()):  # a post_snapshot's meta rows
        _cut_meta(item, cap)
    return e


def _cut_field(holder: dict[str, Any], name: str, flag: str, cap: int) -> bool:
    """Cut holder[name] to `cap` bytes and say so the one way every cut value says it:
    `{flag}_truncated`, `{flag}_bytes` and `{flag}_sha256` of the full original beside it. A value
    the mapper already cut (mapping.max_content_bytes) keeps the size and hash of the original."""
    text = holder.get(name)
    if not isinstance(text, str):
        return False
    full = text.encode("utf-8", "surrogatepass")
    if len(full) <= cap:
        return False
    if not holder.get(f"{flag}_truncated"):
        holder[f"{flag}_bytes"] = len(full)
        holder[f"{flag}_sha256"] = hashlib.sha256(full).hexdigest()
    holder[f"{flag}_truncated"] = True
    holder[name] = _cut(text, cap)
    return True


def _cut_meta(data: dict[str, Any], cap: int) -> None:
    if _cut_field(data, "value", "value", cap):
        data.pop("value_decoded", None)  # as large as the value: the raw prefix is what is left


def shrink_to_fit(
    event: dict[str, Any], limit: int, encode: Callable[[dict[str, Any]], bytes] = orjson.dumps
) -> dict[str, Any] | None:
    """The event with its big text fields cut so that it encodes to at most `limit` bytes, or None
    when even empty fields would not fit."""
    if len(encode(_apply(event, 0))) > limit:
        return None
    lo, hi = 0, len(encode(event))
    while lo < hi:  # the largest cap that fits
        mid = (lo + hi + 1) // 2
        if len(encode(_apply(event, mid))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return _apply(event, lo)
