"""The noise rules against what WordPress really writes: each is asserted with its default (the rows
are filtered) and switched off (a replay of the same binlog range shows them)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Op, WordPressStream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def noisy(wp: WordPressStream) -> Op:
    """One editing session with every kind of noise WordPress writes."""
    return wp.do(
        """$auto = get_default_post_to_edit('post', true)->ID;           // editor opened, never saved
        $id = wp_insert_post(['post_title' => 'Noisy', 'post_status' => 'publish', 'post_content' => 'one']);
        wp_set_post_lock($id);                                            // _edit_lock
        update_post_meta($id, '_edit_last', 1);                          // what edit_post() does
        wp_update_post(['ID' => $id, 'post_content' => 'two']);          // + a revision
        sleep(1);
        wp_update_post(['ID' => $id]);                                    // only post_modified moves
        wp_trash_post($id);                                               // _wp_trash_meta_*, _wp_desired_post_slug
        return ['auto' => $auto, 'id' => $id, 'guid' => get_post_field('guid', $id)];"""
    )


def _gist(events: list[dict[str, Any]], post_id: int) -> list[tuple[str, Any]]:
    out = []
    for e in events:
        if e["post_id"] != post_id:
            continue
        d = e["data"]
        # post_modified moves or not depending on the second the edit lands in: left out here.
        changed = sorted(c for c in d.get("changes", {}) if not c.startswith("post_modified"))
        detail = d.get("meta_key") or d.get("slug") or d.get("to") or changed
        out.append((e["event_type"], detail))
    return out


def test_defaults_filter_the_noise(noisy: Op) -> None:
    pid, auto = noisy.result["id"], noisy.result["auto"]
    assert noisy.of(auto) == [], "an auto-draft that was never saved"
    assert {e["post_id"] for e in noisy.events} == {pid}, "no revision, no auto-draft"
    assert _gist(noisy.events, pid) == [
        ("post_created", []),
        ("post_published", "publish"),
        ("post_term_added", "uncategorized"),
        ("post_updated", ["post_content"]),
        ("post_updated", ["post_status"]),
        ("post_trashed", "trash"),
    ], noisy.summary()


def test_internal_meta_keys_when_not_excluded(wp: WordPressStream, noisy: Op) -> None:
    events = wp.replay(noisy, exclude_meta_keys=[])
    keys = [e["data"]["meta_key"] for e in events if e["event_type"].startswith("post_meta")]
    # Publishing queues pings and enclosures for cron (_pingme, _encloseme) before anything else.
    assert keys == [
        "_pingme", "_encloseme", "_edit_lock", "_edit_last",
        "_wp_trash_meta_status", "_wp_trash_meta_time", "_wp_desired_post_slug",
    ]  # fmt: skip
    status = next(e for e in events if e["data"].get("meta_key") == "_wp_trash_meta_status")
    assert status["data"]["value"] == "publish"


def test_auto_drafts_when_not_excluded(wp: WordPressStream, noisy: Op) -> None:
    auto = noisy.result["auto"]
    events = [e for e in wp.replay(noisy, exclude_post_statuses=[]) if e["post_id"] == auto]
    assert [e["event_type"] for e in events] == ["post_created"]
    post = events[0]["data"]["post"]
    assert (post["post_status"], post["post_title"]) == ("auto-draft", "Auto Draft")


def test_revisions_when_not_excluded(wp: WordPressStream, noisy: Op) -> None:
    pid = noisy.result["id"]
    revisions = [e for e in wp.replay(noisy, exclude_post_types=[]) if e["post_type"] == "revision"]
    # wp_insert_post saves no revision; the edit saves one with the new content.
    assert [(e["event_type"], e["data"]["post"]["post_parent"]) for e in revisions] == [("post_created", pid)]
    assert revisions[0]["data"]["post"]["post_content"] == "two"


def test_guid_backfill_when_kept(wp: WordPressStream, noisy: Op) -> None:
    pid = noisy.result["id"]
    events = [e for e in wp.replay(noisy, drop_guid_backfill=False) if e["post_id"] == pid]
    backfill = [e for e in events if e["event_type"] == "post_updated" and "guid" in e["data"]["changes"]]
    assert len(backfill) == 1
    assert backfill[0]["data"]["changes"]["guid"] == {"old": "", "new": noisy.result["guid"]}
    first_update = next(e for e in events if e["event_type"] == "post_updated")
    assert first_update is backfill[0], "the first UPDATE after the INSERT (and its terms)"


def test_modified_only_update_when_kept(wp: WordPressStream, noisy: Op) -> None:
    pid = noisy.result["id"]
    default = _gist(noisy.events, pid)
    kept = _gist(wp.replay(noisy, drop_modified_only_updates=False), pid)
    extra = [g for g in kept if g not in default or kept.count(g) > default.count(g)]
    assert extra == [("post_updated", [])]
    only = [e for e in wp.replay(noisy, drop_modified_only_updates=False) if e["post_id"] == pid]
    assert any(set(e["data"].get("changes", {})) == {"post_modified", "post_modified_gmt"} for e in only)


def test_trash_slug_update_when_kept(wp: WordPressStream, noisy: Op) -> None:
    pid = noisy.result["id"]
    default = _gist(noisy.events, pid)
    kept = _gist(wp.replay(noisy, drop_trash_slug_update=False), pid)
    extra = [g for g in kept if g not in default or kept.count(g) > default.count(g)]
    assert extra == [("post_updated", ["post_name"])]
    # Alone it says "published, slug noisy__trashed"; it comes right before the status change.
    at = kept.index(("post_updated", ["post_name"]))
    assert kept[at + 1 :] == [("post_updated", ["post_status"]), ("post_trashed", "trash")]
    slug = next(
        e for e in wp.replay(noisy, drop_trash_slug_update=False)
        if e["post_id"] == pid and "post_name" in e["data"].get("changes", {})
    )  # fmt: skip
    assert slug["data"]["changes"]["post_name"] == {"old": "noisy", "new": "noisy__trashed"}
    assert slug["data"]["post"]["post_status"] == "publish"
