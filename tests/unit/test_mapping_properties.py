"""Property: for any row images (any column values, any PHP-serialized meta values), the mapper
returns schema-valid events already encoded exactly as the sink publishes them, a filter reason, or
a schema-valid dead letter that encodes, and never raises."""

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
from cdc.core.values import INVALID_DATE, RawValue, invalid_text
from cdc.mapping import events as ev
from cdc.mapping.events import encode
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import NoLookup, WordPressState
from tests.rows import meta_row, post_row, rel_row


def _php_string(text: str) -> str:
    return f's:{len(text.encode("utf-8", "surrogatepass"))}:"{text}";'


def _php_float(x: float) -> str:
    if x != x:
        return "d:NAN;"
    if x in (float("inf"), float("-inf")):
        return "d:INF;" if x > 0 else "d:-INF;"
    return f"d:{x!r};"


php_keys = st.one_of(st.integers().map(lambda i: f"i:{i};"), st.text(max_size=8).map(_php_string))
php_scalars = st.one_of(
    st.integers().map(lambda i: f"i:{i};"),  # any size: PHP's own ints are 64-bit, serialized text is not
    st.sampled_from(["i:99999999999999999999999;", "i:-99999999999999999999999;", "d:INF;", "d:-INF;", "d:NAN;"]),
    st.floats().map(_php_float),
    st.text(max_size=12).map(_php_string),
    st.sampled_from(["b:0;", "b:1;", "N;"]),
)


def _php_array(items: list[tuple[str, str]]) -> str:
    return f"a:{len(items)}:{{{''.join(k + v for k, v in items)}}}"


def _php_object(args: tuple[str, list[tuple[str, str]]]) -> str:
    name, items = args
    return f'O:{len(name.encode())}:"{name}":{len(items)}:{{{"".join(k + v for k, v in items)}}}'


php_values = st.recursive(
    php_scalars,
    lambda inner: st.one_of(
        st.lists(st.tuples(php_keys, inner), max_size=4).map(_php_array),
        st.lists(inner, max_size=4).map(lambda vs: _php_array([(f"i:{i};", v) for i, v in enumerate(vs)])),
        st.tuples(st.sampled_from(["stdClass", "WP_Post", "Ä"]), st.lists(st.tuples(php_keys, inner), max_size=3)).map(
            _php_object
        ),
    ),
    max_leaves=12,
)


@st.composite
def serialized(draw: st.DrawFn) -> str:
    """Well-formed PHP serialize() output, or that output damaged (cut, a length off, spliced)."""
    text = draw(php_values)
    damage = draw(st.sampled_from(["none", "none", "cut", "length", "splice"]))
    if damage == "cut" and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif damage == "length":
        text = text.replace(":", ":9", 1)
    elif damage == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(php_values) + text[at:]
    return text


# Text Python can hold but UTF-8 cannot (lone surrogates), and what the decoders hand on for values
# stored in a non-strict sql_mode.
hostile_text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=20)
raw_values = st.one_of(
    st.binary(max_size=12).map(lambda b: invalid_text(b, "utf-8")),
    st.sampled_from(["2024-00-15 10:00:00", "0000-01-01 00:00:00", "2024-02-31"]).map(
        lambda t: RawValue(t, INVALID_DATE)
    ),
)

odd_values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(),  # beyond 64 bits: JSON cannot carry them as numbers
    st.text(max_size=40),
    hostile_text,
    st.binary(max_size=20),
    st.floats(),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    raw_values,
    st.sampled_from(['a:1:{i:0;s:1:"x";}', "a:9999999:{", 's:3:"😀";', 'O:8:"stdClass":0:{}', "b:1;"]),
    serialized(),
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
        value = data.draw(st.one_of(st.text(), serialized(), raw_values))
        base = meta_row(data.draw(st.integers(0, 2**64 - 1)), pid, data.draw(st.text(max_size=10)), value)
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
    assert len(out.encoded) == len(out.events)
    for event, value in zip(out.events, out.encoded, strict=True):
        ev.EVENT_MODELS[event["event_type"]].model_validate(event)
        assert value == encode(event)  # the bytes the sink publishes, made inside the row's guard
        ev.EVENT_MODELS[event["event_type"]].model_validate(orjson.loads(value))
        _check_decoded(event)
        _check_warnings(change, event)
    if out.dead_letter is not None:
        ev.DeadLetter.model_validate(out.dead_letter)
        ev.DeadLetter.model_validate(orjson.loads(encode(out.dead_letter)))  # the sink's encode must not raise


def _check_warnings(change: RowChange, event: dict[str, Any]) -> None:
    """A RawValue's text in a published column is always named in column_warnings."""
    image, side = (change.after, "after") if change.after is not None else (change.before, "before")
    assert image is not None
    published = {"meta_value", "meta_key"} if change.wp.kind is TableKind.POSTMETA else set(image) - {"post_password"}
    if change.wp.kind not in (TableKind.POSTS, TableKind.POSTMETA) or event["event_type"] not in (
        ev.POST_CREATED, ev.POST_UPDATED, ev.POST_DELETED, ev.POST_META_ADDED, ev.POST_META_UPDATED,
        ev.POST_META_DELETED,
    ):  # fmt: skip
        return
    for col in published:
        if isinstance(image.get(col), RawValue):
            warning = {"image": side, "column": col, "problem": image[col].problem}
            assert warning in event.get("column_warnings", []), (col, event.get("column_warnings"))


def _check_decoded(event: dict[str, Any]) -> None:
    """value_decoded_as_text names exactly the strings that stand for numbers JSON cannot carry."""
    data = event["data"]
    for item in [data, *data.get("meta", [])] if isinstance(data, dict) else []:
        for pointer in item.get("value_decoded_as_text", []):
            node = item["value_decoded"]
            for part in pointer.split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
            assert isinstance(node, str) and (node in ("INF", "-INF", "NAN") or int(node).bit_length() > 63)


@settings(
    max_examples=int(os.environ.get("WPCDC_HYPOTHESIS_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(value=serialized(), op=st.sampled_from(["insert", "update", "delete"]))
def test_any_serialized_meta_value_maps_and_encodes(value: str, op: str) -> None:
    before = meta_row(1, 2, "k", value) if op != "insert" else None
    after = meta_row(1, 2, "k", value + ("" if op != "update" else " ")) if op != "delete" else None
    out = Mapper(WordPressState(NoLookup()), 1).map(
        RowChange(op, "wp_postmeta", WordPressTable(1, TableKind.POSTMETA), before, after, "b.000001", 4, 0, 0, None)
    )
    assert out.dead_letter is None, out.dead_letter  # a meta value always has a fallback: never a dead letter
    (event,) = out.events
    ev.EVENT_MODELS[event["event_type"]].model_validate(orjson.loads(out.encoded[0]))
    _check_decoded(event)


def test_a_value_json_cannot_carry_dead_letters_only_its_row() -> None:
    mapper = Mapper(WordPressState(NoLookup()), 1)
    change = RowChange(
        "insert", "wp_posts", WordPressTable(1, TableKind.POSTS), None, post_row(1, plugin_big=2**70),
        "b.000001", 4, 0, 0, None,
    )  # fmt: skip
    out = mapper.map(change)
    assert out.events == [] and out.dead_letter is not None
    assert "cannot be encoded as JSON" in out.dead_letter["error"]
    assert orjson.loads(encode(out.dead_letter))["after"]["plugin_big"] == str(2**70)
    ok = mapper.map(
        RowChange("insert", "wp_posts", WordPressTable(1, TableKind.POSTS), None, post_row(2), "b", 4, 1, 0, None)
    )
    assert len(ok.encoded) == 1  # the next row is not affected


def test_huge_integers_and_inf_in_serialized_values_are_text_and_flagged() -> None:
    value = 'a:3:{s:3:"big";i:99999999999999999999999;s:1:"f";a:2:{i:0;d:INF;i:1;d:NAN;}s:3:"a/b";d:-INF;}'
    change = RowChange(
        "insert", "wp_postmeta", WordPressTable(1, TableKind.POSTMETA), None, meta_row(1, 2, "k", value),
        "b.000001", 4, 0, 0, None,
    )  # fmt: skip
    (event,) = Mapper(WordPressState(NoLookup()), 1).map(change).events
    data = event["data"]
    assert data["value"] == value  # the raw value is always there
    assert data["value_decoded"] == {"big": "99999999999999999999999", "f": ["INF", "NAN"], "a/b": "-INF"}
    assert data["value_decoded_as_text"] == ["/big", "/f/0", "/f/1", "/a~1b"]
    assert "value_decode_error" not in data


def test_decimal_and_dates_pass_through_as_text() -> None:
    row = post_row(1, plugin_price=Decimal("1.50"), plugin_day=dt.date(2026, 1, 2))
    change = RowChange("insert", "wp_posts", WordPressTable(1, TableKind.POSTS), None, row, "b.000001", 4, 0, 0, None)
    (e,) = Mapper(WordPressState(NoLookup()), 1).map(change).events
    assert e["data"]["post"]["plugin_price"] == "1.50" and e["data"]["post"]["plugin_day"] == "2026-01-02"
