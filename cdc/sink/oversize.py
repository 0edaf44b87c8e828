"""Fitting an event under the broker's message size limit (kafka.oversize_policy: truncate).

Only the big free-text fields are cut: post_content (in the row and in `changes`) and meta values
(also those in a post_snapshot's meta list).
What was cut is always flagged with the full size and SHA-256 of the original, so a consumer knows
to fetch it from WordPress. Pure: no I/O.
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
    if isinstance(post, dict) and isinstance(post.get("post_content"), str):
        full = post["post_content"].encode("utf-8", "surrogatepass")
        if len(full) > cap:
            if not post.get("content_truncated"):
                post["content_bytes"] = len(full)
                post["content_sha256"] = hashlib.sha256(full).hexdigest()
            post["content_truncated"] = True
            post["post_content"] = _cut(post["post_content"], cap)
    change = data.get("changes", {}).get("post_content")
    if isinstance(change, dict):
        for side in ("old", "new"):
            if isinstance(change.get(side), str):
                change[side] = _cut(change[side], cap)
    if "meta_id" in data:
        _cut_meta(data, cap)
        if isinstance(data.get("previous_value"), str):
            data["previous_value"] = _cut(data["previous_value"], cap)
    for item in data.get("meta", ()):  # a post_snapshot's meta rows
        _cut_meta(item, cap)
    return e


def _cut_meta(data: dict[str, Any], cap: int) -> None:
    value = data.get("value")
    if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > cap:
        full = value.encode("utf-8", "surrogatepass")
        data["value_truncated"] = True
        data["value_bytes"] = len(full)
        data["value_sha256"] = hashlib.sha256(full).hexdigest()
        data["value"] = _cut(value, cap)
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
