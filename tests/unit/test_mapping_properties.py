"""Property: for any row images, the mapper returns schema-valid events, a filter reason, or a
schema-valid dead letter, and never raises."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc.core.changes import RowChange
from cdc.core.tables import TableKind, WordPressTable
from cdc.mapping import events as ev
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import NoLookup, WordPressState
from tests.rows import meta_row, post_row, rel_row

odd_values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=40),
    st.binary(max_size=20),
    st.floats(allow_nan=False),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.sampled_from(['a:1:{i:0;s:1:"x";}', "a:9999999:{", 's:3:"😀";', 'O:8:"stdClass":0:{}', "b:1;"]),
)
statuses = st.sampled_from(["draft", "publish", "future", "trash", "private", "pending", "auto-draft", "inherit"])


def mutate(base: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    row = dict(base)
    for key in data.draw(st.lists(st.sampled_from(sorted(base)), max_size=4, unique=True)):
        if data.draw(st.booleans()):
            del row[key]
        else:
            row[key] = data.draw(odd_values)
    if data.draw(st.booleans()):
        row[data.draw(st.text(min_size=1, max_size=10))] = data.draw(odd_values)
    return row


def image(kind: TableKind, data: st.DataObject) -> dict[str, Any]:
    pid = data.draw(st.integers(min_value=0, max_value=2**64 - 1))
    if kind is TableKind.POSTS:
        base = post_row(pid, post_status=data.draw(statuses), post_content=data.draw(st.text(max_size=300)))
    elif kind is TableKind.POSTMETA:
        base = meta_row(
            data.draw(st.integers(0, 2**64 - 1)), pid, data.draw(st.text(max_size=10)), data.draw(st.text())
        )
    elif kind is TableKind.TERM_RELATIONSHIPS:
        base = rel_row(pid, data.draw(st.integers(0, 2**32)), data.draw(st.integers(-5, 5)))
    else:
        base = {"term_taxonomy_id": 1, "term_id": 2, "taxonomy": "category", "name": "n", "slug": "s"}
    return mutate(base, data) if data.draw(st.booleans()) else base


@settings(
    max_examples=int(os.environ.get("WPCDC_HYPOTHESIS_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_mapper_never_raises_and_output_is_schema_valid(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(list(TableKind)))
    op = data.draw(st.sampled_from(["insert", "update", "delete"]))
    before = image(kind, data) if op != "insert" else None
    after = image(kind, data) if op != "delete" else None
    blog = data.draw(st.integers(min_value=1, max_value=5))
    change = RowChange(
        op, f"wp_{kind.value}", WordPressTable(blog, kind), before, after, "binlog.000001", 4, 0, 0, None
    )

    out = Mapper(WordPressState(NoLookup()), 1).map(change)  # must not raise

    # Exactly one outcome per row change.
    assert [bool(out.events), out.filtered is not None, out.dead_letter is not None].count(True) == 1
    for event in out.events:
        ev.EVENT_MODELS[event["event_type"]].model_validate(event)
        orjson.dumps(event)  # serializable exactly as the sink serializes it
    if out.dead_letter is not None:
        ev.DeadLetter.model_validate(out.dead_letter)
        orjson.dumps(out.dead_letter)


def test_decimal_and_dates_pass_through_as_text() -> None:
    row = post_row(1, plugin_price=Decimal("1.50"), plugin_day=dt.date(2026, 1, 2))
    change = RowChange("insert", "wp_posts", WordPressTable(1, TableKind.POSTS), None, row, "b.000001", 4, 0, 0, None)
    (e,) = Mapper(WordPressState(NoLookup()), 1).map(change).events
    assert e["data"]["post"]["plugin_price"] == "1.50" and e["data"]["post"]["plugin_day"] == "2026-01-02"
