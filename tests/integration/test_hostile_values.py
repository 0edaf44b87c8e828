"""Values WordPress's non-strict SQL mode lets into the tables, and PHP-serialized values JSON cannot
carry: each one is published with a documented fallback (or dead-letters its own row only), and the
stream goes on."""

from __future__ import annotations

from typing import Any

import pytest

from cdc.config import ENV_MYSQL_PASSWORD
from cdc.dev.stack import MYSQL_PASSWORD
from tests.integration.conftest import Site
from tests.integration.test_fast_decoding import decode

pytestmark = pytest.mark.integration

BAD = "_binary 0x41EDA08042"  # 'A', an encoded surrogate (U+D800) utf8mb4 must not hold, 'B'
REPLACED = "A\ufffd\ufffd\ufffdB"


def stored_text(site: Site) -> str:
    """What the server stores for BAD in a utf8mb4 column under a non-strict sql_mode: MariaDB keeps
    the bytes (wpcdc replaces the bad ones), MySQL cuts the string at the first bad byte (a warning)."""
    return REPLACED if site.stack.kind == "mariadb" else "A"


def lenient(site: Site, *statements: str) -> None:
    """Run as WordPress does: a non-strict sql_mode, in which the server stores what it would refuse."""
    with site.conn.cursor() as cur:
        cur.execute(f"USE `{site.database}`")
        cur.execute("SET SESSION sql_mode = ''")
        try:
            for s in statements:
                cur.execute(s)
        finally:
            cur.execute("SET SESSION sql_mode = DEFAULT")


def meta_values_sql(pid: int, bad_row: int, n: int = 100) -> str:
    rows = [f"({pid}, 'k{i}', {BAD if i == bad_row else repr(f'v{i}')})" for i in range(n)]
    return "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES " + ", ".join(rows)


@pytest.mark.parametrize("fast", [True, False], ids=["fast_decoding", "library"])
def test_one_invalid_utf8_value_in_a_100_row_statement_yields_100_events(site: Site, fast: bool) -> None:
    site.config["source"]["fast_decoding"] = fast
    site.write_config()
    pid = site.insert_post("host")
    site.start = site.position()
    site.set_checkpoint()
    s = site.streamer()
    lenient(
        site,
        meta_values_sql(pid, bad_row=37),
        "INSERT INTO wp_posts (post_title, post_status, post_type, post_content, post_excerpt, to_ping, pinged,"
        f" post_content_filtered) VALUES ({BAD}, 'draft', 'post', 'ok', '', '', '', '')",
    )
    # MariaDB really stored the surrogate's bytes (this is what the binlog then carries); MySQL cut the
    # value at the first bad byte, so its binlog carries valid text and no warning is due.
    mariadb = site.stack.kind == "mariadb"
    stored = "41EDA08042" if mariadb else "41"
    assert site.query("SELECT HEX(meta_value) FROM wp_postmeta WHERE meta_key = 'k37'") == [(stored,)]
    later = site.insert_post("after the bad rows")
    records = site.consume(expect=102)
    assert s.stop() == 0, s.output()
    assert site.consume(idle=1.0, topic=site.dead_letter_topic) == []

    meta = [r.value for r in records if r.value["event_type"] == "post_meta_added"]
    assert len(meta) == 100
    bad = next(e for e in meta if e["data"]["meta_key"] == "k37")
    assert bad["data"]["value"] == stored_text(site)
    if mariadb:
        assert bad["column_warnings"] == [{"image": "after", "column": "meta_value", "problem": "invalid_text"}]
    assert all("column_warnings" not in e for e in meta if e is not bad)
    (post,) = [r.value for r in records if r.value["event_type"] == "post_created" and r.value["post_id"] != later]
    assert post["data"]["post"]["post_title"] == stored_text(site)
    if mariadb:
        assert post["column_warnings"] == [{"image": "after", "column": "post_title", "problem": "invalid_text"}]
    else:
        assert "column_warnings" not in post and "column_warnings" not in bad
    assert any(r.value["post_id"] == later for r in records)  # and the stream went on


def test_a_partial_zero_date_keeps_its_text_and_is_flagged(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    lenient(
        site,
        "INSERT INTO wp_posts (post_title, post_status, post_type, post_content, post_excerpt, to_ping, pinged,"
        " post_content_filtered, post_date, post_date_gmt) VALUES ('zero month', 'draft', 'post', '', '', '', '',"
        " '', '2024-00-15 10:00:00', '0000-00-00 00:00:00')",
    )
    assert site.query("SELECT CAST(post_date AS CHAR) FROM wp_posts WHERE post_title = 'zero month'") == [
        ("2024-00-15 10:00:00",)
    ]
    later = site.insert_post("later")
    records = site.consume(expect=2)
    assert s.stop() == 0, s.output()
    created = {r.value["data"]["post"]["post_title"]: r.value for r in records}
    post = created["zero month"]["data"]["post"]
    assert post["post_date"] == "2024-00-15 10:00:00"  # the server's text, not null
    assert post["post_date_gmt"] is None  # the all-zero date stays null, as documented
    assert created["zero month"]["column_warnings"] == [
        {"image": "after", "column": "post_date", "problem": "invalid_date"}
    ]
    assert created["later"]["post_id"] == later and "column_warnings" not in created["later"]


def test_huge_integers_and_inf_in_serialized_meta_do_not_stop_the_stream(site: Site) -> None:
    pid = site.insert_post("host")
    site.start = site.position()
    site.set_checkpoint()
    s = site.streamer()
    site.sql(
        "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES "
        f"({pid}, 'huge', 'i:99999999999999999999999;'),"
        f" ({pid}, 'floats', 'a:3:{{i:0;d:INF;i:1;d:-INF;s:1:\"n\";d:NAN;}}')"
    )
    later = site.insert_post("after the huge integer")
    records = site.consume(expect=3)
    assert s.proc.poll() is None, s.output()  # still running: it used to exit 1 on this row, on every restart
    assert s.stop() == 0, s.output()
    by_key: dict[Any, Any] = {r.value["data"].get("meta_key"): r.value["data"] for r in records}
    assert by_key["huge"]["value_decoded"] == "99999999999999999999999"
    assert by_key["huge"]["value_decoded_as_text"] == [""]
    assert by_key["floats"]["value_decoded"] == {"0": "INF", "1": "-INF", "n": "NAN"}
    assert by_key["floats"]["value_decoded_as_text"] == ["/0", "/1", "/n"]
    assert any(r.value["post_id"] == later for r in records)


def test_fast_decoding_and_the_library_agree_on_hostile_values(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MYSQL_PASSWORD, MYSQL_PASSWORD)
    pid = site.insert_post("host")
    site.sql("ALTER TABLE wp_posts ADD COLUMN t_dt6 DATETIME(6) NULL, ADD COLUMN t_date DATE NULL")
    site.start = site.position()
    lenient(
        site,
        meta_values_sql(pid, bad_row=3, n=5),
        f"UPDATE wp_posts SET post_title = {BAD}, post_modified = '2024-05-00 00:00:00',"
        f" t_dt6 = '2024-00-00 10:11:12.123456', t_date = '2024-02-00' WHERE ID = {pid}",
        f"UPDATE wp_posts SET t_dt6 = NULL, t_date = '0000-00-00' WHERE ID = {pid}",
    )
    fast, library = decode(site, True), decode(site, False)
    assert fast == library
    after = next(row[3] for row in fast if row[0] == "update")
    assert after["t_dt6"].text == "2024-00-00 10:11:12.123456" and after["t_date"].text == "2024-02-00"
    assert after["post_modified"].text == "2024-05-00 00:00:00"
    if site.stack.kind == "mariadb":
        assert after["post_title"].text == REPLACED
    else:
        assert after["post_title"] == stored_text(site)


def test_a_snapshot_publishes_hostile_values_like_the_stream(make_site: Any) -> None:
    site = make_site(snapshot={"mode": "initial", "chunk_size": 10})
    lenient(
        site,
        "INSERT INTO wp_posts (post_title, post_status, post_type, post_content, post_excerpt, to_ping, pinged,"
        f" post_content_filtered, post_date) VALUES ({BAD}, 'publish', 'post', '', '', '', '', '',"
        " '2024-00-15 10:00:00')",
    )
    (pid,) = site.query("SELECT MAX(ID) FROM wp_posts")[0]
    lenient(
        site,
        f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, 'bad', {BAD}),"
        f" ({pid}, 'huge', 'i:99999999999999999999999;')",
    )
    other = site.insert_post("plain", status="publish")
    s = site.streamer()
    try:
        records = site.consume(expect=2, timeout=60)
        assert s.proc.poll() is None, s.output()
    finally:
        assert s.stop() == 0, s.output()
    by_id = {r.value["post_id"]: r.value for r in records}
    assert set(by_id) == {pid, other}
    snap = by_id[pid]
    assert snap["data"]["post"]["post_title"] == stored_text(site)
    assert snap["data"]["post"]["post_date"] == "2024-00-15 10:00:00"
    meta = {m["meta_key"]: m for m in snap["data"]["meta"]}
    assert meta["bad"]["value"] == stored_text(site) and meta["huge"]["value_decoded"] == "99999999999999999999999"
    invalid_text = {("post_title", "invalid_text"), ("meta_value", "invalid_text")}
    assert {(w["column"], w["problem"]) for w in snap["column_warnings"]} == {
        ("post_date", "invalid_date"),
        *(invalid_text if site.stack.kind == "mariadb" else ()),
    }
    assert "column_warnings" not in by_id[other]


@pytest.mark.parametrize("fast", [True, False], ids=["fast_decoding", "library"])
def test_an_update_over_16_mib_arrives_in_two_packets_and_is_read_whole(site: Site, fast: bool) -> None:
    # A post of ~9 MB (pasted images, page-builder markup) updated with FULL row images is one binlog
    # event of ~18 MB: the dump protocol sends it as a 16 MiB - 1 packet and the rest, which the reader
    # must join before decoding (cdc/source/packets.py), on the lean path and the library's alike.
    import hashlib

    site.config["source"]["fast_decoding"] = fast
    site.write_config()
    site.set_checkpoint()
    s = site.streamer()
    first = "".join(f"<p>{i:07d} first</p>" for i in range(450_000))  # 9.0 MB
    second = "".join(f"<p>{i:07d} again</p>" for i in range(450_000))
    pid = site.insert_post("big", post_content=first)
    site.sql("UPDATE wp_posts SET post_content = %s WHERE ID = %s", args=(second, pid))
    size = site.query(f"SELECT LENGTH(post_content) FROM wp_posts WHERE ID = {pid}")[0][0]
    assert 2 * size > 2**24, "the update's event must not fit one packet"
    later = site.insert_post("after the big update")
    try:
        records = site.consume(expect=3)
        assert s.stop() == 0, s.output()
    finally:
        # SHOW BINLOG EVENTS cannot read past an event over max_allowed_packet ("Wrong offset or I/O
        # error"): later tests of this leg that list their own file's events must not find this one there.
        site.sql("FLUSH BINARY LOGS")
    events = {(r.value["post_id"], r.value["event_type"]): r.value for r in records}
    change = events[(pid, "post_updated")]["data"]["changes"]["post_content"]
    digest = {side: hashlib.sha256(text.encode()).hexdigest() for side, text in (("old", first), ("new", second))}
    assert (change["old_bytes"], change["new_bytes"]) == (len(first), len(second))
    assert (change["old_sha256"], change["new_sha256"]) == (digest["old"], digest["new"])
    assert change["new"] == second[: len(change["new"])] and change["new_truncated"] is True
    assert (later, "post_created") in events  # and the stream went on
