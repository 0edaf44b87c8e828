"""Row-image fixtures shaped like what python-mysql-replication returns for WordPress tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cdc.core.changes import RowChange
from cdc.core.tables import TableKind, WordPressTable

_pos = [1000]


def post_row(post_id: int = 1, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ID": post_id,
        "post_author": 1,
        "post_date": dt.datetime(2026, 11, 22, 10, 0, 0),
        "post_date_gmt": None,  # zero date, as the library decodes 0000-00-00 00:00:00
        "post_content": "<p>Hello</p>",
        "post_title": "Hello",
        "post_excerpt": "",
        "post_status": "draft",
        "comment_status": "open",
        "ping_status": "open",
        "post_password": "",
        "post_name": "",
        "to_ping": "",
        "pinged": "",
        "post_modified": dt.datetime(2026, 11, 22, 10, 0, 0),
        "post_modified_gmt": dt.datetime(2026, 11, 22, 9, 0, 0),
        "post_content_filtered": "",
        "post_parent": 0,
        "guid": f"http://example.test/?p={post_id}",
        "menu_order": 0,
        "post_type": "post",
        "post_mime_type": "",
        "comment_count": 0,
    }
    row.update(over)
    return row


def meta_row(meta_id: int = 10, post_id: int = 1, key: str = "color", value: str | None = "blue") -> dict[str, Any]:
    return {"meta_id": meta_id, "post_id": post_id, "meta_key": key, "meta_value": value}


def rel_row(post_id: int = 1, tt_id: int = 5, order: int = 0) -> dict[str, Any]:
    return {"object_id": post_id, "term_taxonomy_id": tt_id, "term_order": order}


def change(
    kind: TableKind,
    op: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    blog_id: int = 1,
    row: int = 0,
    pos: int | None = None,
    gtid: str | None = "0-101-7",
) -> RowChange:
    if pos is None:
        _pos[0] += 100
        pos = _pos[0]
    table = f"wp_{kind.value}" if blog_id == 1 else f"wp_{blog_id}_{kind.value}"
    return RowChange(
        op, table, WordPressTable(blog_id, kind), before, after, "binlog.000003", pos, row, 1_790_000_000, gtid
    )
