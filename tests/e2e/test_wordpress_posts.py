"""Post lifecycle driven by WordPress's own PHP APIs; each assertion names the WordPress operation and
the domain events a consumer must see for it."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import WordPressStream

pytestmark = pytest.mark.e2e


def test_draft_edit_publish_edit_slug_unpublish(wp: WordPressStream) -> None:
    # wp_insert_post(draft): the post row (guid back-fill filtered) and the default category.
    op = wp.do(
        "return wp_insert_post(['post_title' => 'Draft one', 'post_content' => 'Body', 'post_status' => 'draft']);"
    )
    pid = op.result
    assert op.types(pid) == ["post_created", "post_term_added"], op.summary()
    created = op.one("post_created", pid)["data"]["post"]
    assert (created["post_title"], created["post_status"], created["post_type"]) == ("Draft one", "draft", "post")
    assert created["post_date_gmt"] is None, "a draft's zero post_date_gmt is null"
    assert created["guid"] == "", "the INSERT precedes WordPress's guid back-fill"
    term = op.one("post_term_added", pid)["data"]
    assert (term["taxonomy"], term["slug"]) == ("category", "uncategorized")

    # wp_update_post on the draft: one post_updated carrying the changed title, no lifecycle event.
    op = wp.do("return wp_update_post(['ID' => $args['id'], 'post_title' => 'Draft one edited']);", id=pid)
    assert op.types(pid) == ["post_updated"], op.summary()
    assert op.events[0]["data"]["changes"]["post_title"] == {"old": "Draft one", "new": "Draft one edited"}

    # wp_update_post to publish: the row gets a slug and a GMT date, and the lifecycle says draft -> publish.
    op = wp.do("return wp_update_post(['ID' => $args['id'], 'post_status' => 'publish']);", id=pid)
    assert op.types(pid) == ["post_updated", "post_published"], op.summary()
    changes = op.one("post_updated", pid)["data"]["changes"]
    assert changes["post_status"] == {"old": "draft", "new": "publish"}
    assert changes["post_name"] == {"old": "", "new": "draft-one-edited"}
    assert changes["post_date_gmt"]["old"] is None and changes["post_date_gmt"]["new"].endswith("Z")
    published = op.one("post_published", pid)
    assert (published["data"]["from"], published["data"]["to"]) == ("draft", "publish")
    assert published["source"]["pos"] == op.one("post_updated", pid)["source"]["pos"], "same row change"

    # Editing a published post is an update, not a second publish.
    op = wp.do("return wp_update_post(['ID' => $args['id'], 'post_content' => 'New body']);", id=pid)
    assert op.types(pid) == ["post_updated"], op.summary()
    assert op.events[0]["data"]["changes"]["post_content"] == {"old": "Body", "new": "New body"}
    assert op.events[0]["data"]["post"]["post_status"] == "publish"

    # A slug change on a published post: the new post_name, and WordPress remembers the old one.
    op = wp.do("return wp_update_post(['ID' => $args['id'], 'post_name' => 'new-slug']);", id=pid)
    assert op.types(pid) == ["post_updated", "post_meta_added"], op.summary()
    assert op.one("post_updated", pid)["data"]["changes"]["post_name"] == {"old": "draft-one-edited", "new": "new-slug"}
    old_slug = op.one("post_meta_added", pid)["data"]
    assert (old_slug["meta_key"], old_slug["value"]) == ("_wp_old_slug", "draft-one-edited")

    # Unpublish back to draft.
    op = wp.do("return wp_update_post(['ID' => $args['id'], 'post_status' => 'draft']);", id=pid)
    assert op.types(pid) == ["post_updated", "post_unpublished"], op.summary()
    assert op.one("post_unpublished", pid)["data"] == {"from": "publish", "to": "draft"}


def test_wp_publish_post_changes_only_the_status(wp: WordPressStream) -> None:
    op = wp.do(
        "$id = wp_insert_post(['post_title' => 'Quick', 'post_status' => 'draft']); wp_publish_post($id); return $id;"
    )
    pid = op.result
    assert op.types(pid) == ["post_created", "post_term_added", "post_updated", "post_published"], op.summary()
    assert op.one("post_published", pid)["data"] == {"from": "draft", "to": "publish"}
    # wp_publish_post() leaves the slug empty (see the WordPress notes): the event says what the row says.
    assert op.one("post_updated", pid)["data"]["post"]["post_name"] == ""


def test_trash_and_untrash(wp: WordPressStream) -> None:
    pid = wp.do("return wp_insert_post(['post_title' => 'Binned', 'post_status' => 'publish']);").result
    op = wp.do("return wp_trash_post($args['id']) ? 1 : 0;", id=pid)
    # WordPress suffixes the slug in an UPDATE of its own first (filtered: trash_slug, see
    # test_wordpress_noise), then changes the status; the _wp_trash_meta_* rows are internal meta.
    assert op.types(pid) == ["post_updated", "post_trashed"], op.summary()
    updated = op.one("post_updated", pid)["data"]
    assert updated["changes"]["post_status"] == {"old": "publish", "new": "trash"}
    assert updated["post"]["post_name"] == "binned__trashed", "the row that says trash carries the new slug"
    assert op.one("post_trashed", pid)["data"] == {"from": "publish", "to": "trash"}

    op = wp.do("return wp_untrash_post($args['id']) ? 1 : 0;", id=pid)
    # WordPress >= 5.6 restores to draft and strips __trashed in the same UPDATE.
    assert op.types(pid) == ["post_updated", "post_restored"], op.summary()
    changes = op.one("post_updated", pid)["data"]["changes"]
    assert changes["post_status"] == {"old": "trash", "new": "draft"}
    assert changes["post_name"] == {"old": "binned__trashed", "new": "binned"}
    assert op.one("post_restored", pid)["data"] == {"from": "trash", "to": "draft"}


def test_force_delete_of_a_post_with_meta_terms_and_a_comment(wp: WordPressStream) -> None:
    op = wp.do(
        """$id = wp_insert_post(['post_title' => 'Doomed', 'post_status' => 'publish', 'tags_input' => ['red']]);
        add_post_meta($id, 'colour', 'red');
        wp_insert_comment(['comment_post_ID' => $id, 'comment_content' => 'first!', 'comment_approved' => 1]);
        return $id;"""
    )
    pid = op.result
    assert op.one("post_updated", pid)["data"]["changes"]["comment_count"] == {"old": 0, "new": 1}

    op = wp.do("return wp_delete_post($args['id'], true) ? 1 : 0;", id=pid)
    types = op.types(pid)
    # Comments, terms and meta go before the post row; the post_deleted event is the last one.
    assert types[-1] == "post_deleted", op.summary()
    assert types.count("post_deleted") == 1
    removed = {(e["data"]["taxonomy"], e["data"]["slug"]) for e in op.of(pid) if e["event_type"] == "post_term_removed"}
    assert removed == {("category", "uncategorized"), ("post_tag", "red")}
    meta = [e["data"] for e in op.of(pid) if e["event_type"] == "post_meta_deleted"]
    assert [(m["meta_key"], m["previous_value"], m["value"]) for m in meta] == [("colour", "red", None)]
    comment_counts = [e["data"]["changes"]["comment_count"] for e in op.of(pid) if e["event_type"] == "post_updated"]
    assert comment_counts == [{"old": 1, "new": 0}], "deleting the comment recounts before the post goes"
    deleted = op.one("post_deleted", pid)["data"]["post"]
    assert (deleted["ID"], deleted["post_title"], deleted["post_status"]) == (pid, "Doomed", "publish")


def test_pages_with_a_parent_and_deleting_the_parent(wp: WordPressStream) -> None:
    op = wp.do(
        """$parent = wp_insert_post(['post_title' => 'Parent', 'post_type' => 'page', 'post_status' => 'publish']);
        $child = wp_insert_post(['post_title' => 'Child', 'post_type' => 'page', 'post_status' => 'publish',
                                 'post_parent' => $parent]);
        return [$parent, $child];"""
    )
    parent, child = op.result
    assert op.types(parent) == ["post_created", "post_published"], "pages have no default category"
    assert op.types(child) == ["post_created", "post_published"]
    assert op.one("post_created", child)["data"]["post"]["post_parent"] == parent
    assert op.one("post_created", child)["post_type"] == "page"

    op = wp.do("return wp_delete_post($args['id'], true) ? 1 : 0;", id=parent)
    # WordPress re-parents the children to the grandparent (0) before deleting the page.
    assert op.types(child) == ["post_updated"], op.summary()
    assert op.one("post_updated", child)["data"]["changes"] == {"post_parent": {"old": parent, "new": 0}}
    assert op.types(parent) == ["post_deleted"]
    assert op.events[-1]["post_id"] == parent


def test_scheduled_post_published_by_cron(wp: WordPressStream) -> None:
    # Scheduled 61 s ahead when the e2e session started (WordPress stores `publish` for anything sooner).
    sched = wp.scheduled
    assert sched is not None
    pid = sched.result["id"]
    assert sched.types(pid) == ["post_created", "post_scheduled", "post_term_added"], sched.summary()
    assert sched.one("post_scheduled", pid)["data"] == {"from": None, "to": "future"}
    assert sched.one("post_created", pid)["data"]["post"]["post_status"] == "future"

    wait = sched.result["due"] - time.time() + 1
    if wait > 0:
        time.sleep(wait)
    # What wp-cron.php does for every due event (it ends in die(), so its loop is run here).
    op = wp.do(
        """$ran = array();
        foreach (wp_get_ready_cron_jobs() as $timestamp => $hooks) {
            foreach ($hooks as $hook => $events) {
                foreach ($events as $event) {
                    if ($event['schedule']) {
                        wp_reschedule_event($timestamp, $event['schedule'], $hook, $event['args']);
                    }
                    wp_unschedule_event($timestamp, $hook, $event['args']);
                    do_action_ref_array($hook, $event['args']);
                    $ran[] = $hook;
                }
            }
        }
        return $ran;"""
    )
    assert "publish_future_post" in op.result
    assert op.types(pid) == ["post_updated", "post_published"], op.summary()
    assert op.one("post_published", pid)["data"] == {"from": "future", "to": "publish"}


def test_custom_post_type_with_custom_taxonomy(wp: WordPressStream) -> None:
    # `book` and `genre` are registered by the e2e mu-plugin, as a plugin would register them.
    op = wp.do(
        """$g = wp_insert_term('Sci-Fi', 'genre');
        $b = wp_insert_post(['post_title' => 'Dune', 'post_type' => 'book', 'post_status' => 'publish']);
        wp_set_object_terms($b, [$g['term_id']], 'genre');
        wp_set_object_terms($b, ['Space Opera'], 'genre', true);
        return $b;"""
    )
    pid = op.result
    assert op.types(pid) == ["post_created", "post_published", "post_term_added", "post_term_added"], op.summary()
    assert all(e["post_type"] == "book" for e in op.of(pid))
    terms = [(e["data"]["taxonomy"], e["data"]["slug"], e["data"]["name"]) for e in op.of(pid)[2:]]
    assert terms == [("genre", "sci-fi", "Sci-Fi"), ("genre", "space-opera", "Space Opera")]


def test_attachment_and_featured_image(wp: WordPressStream) -> None:
    op = wp.do(
        """$p = wp_insert_post(['post_title' => 'With image', 'post_status' => 'publish']);
        $up = wp_upload_dir(); $file = $up['path'] . '/pixel.png';
        file_put_contents($file, base64_decode(
            'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=='));
        $a = wp_insert_attachment(
            ['post_title' => 'pixel', 'post_mime_type' => 'image/png', 'post_status' => 'inherit'], $file, $p);
        wp_update_attachment_metadata($a, wp_generate_attachment_metadata($a, $file));
        set_post_thumbnail($p, $a);
        return [$p, $a];"""
    )
    post, att = op.result
    assert op.types(att) == ["post_created", "post_meta_added", "post_meta_added"], op.summary()
    row = op.one("post_created", att)["data"]["post"]
    assert (row["post_type"], row["post_mime_type"], row["post_parent"], row["post_status"]) == (
        "attachment", "image/png", post, "inherit",
    )  # fmt: skip
    assert op.one("post_meta_added", att, meta_key="_wp_attached_file")["data"]["value"].endswith("pixel.png")
    metadata = op.one("post_meta_added", att, meta_key="_wp_attachment_metadata")["data"]
    assert metadata["value_decoded"]["width"] == 1 and metadata["value_decoded"]["height"] == 1
    assert metadata["value_decoded"]["file"].endswith("pixel.png")
    thumb = op.one("post_meta_added", post, meta_key="_thumbnail_id")["data"]
    assert thumb["value"] == str(att), "the featured image is a meta row on the post"
    assert op.types(post)[-1] == "post_meta_added"


def test_revision_is_filtered_but_the_edit_is_not(wp: WordPressStream) -> None:
    op = wp.do(
        """$p = wp_insert_post(['post_title' => 'Rev', 'post_status' => 'publish', 'post_content' => 'v1']);
        wp_update_post(['ID' => $p, 'post_content' => 'v2']);
        $revs = array_keys(wp_get_post_revisions($p));
        return ['post' => $p, 'revisions' => $revs];"""
    )
    pid, revisions = op.result["post"], op.result["revisions"]
    assert revisions, "WordPress saved a revision"
    assert op.types(pid) == ["post_created", "post_published", "post_term_added", "post_updated"], op.summary()
    assert {e["post_id"] for e in op.events} == {pid}, "the revision rows are filtered by default"
    # With the revision rule off, a replay of the same binlog range shows the revision row.
    unfiltered = wp.replay(op, exclude_post_types=[])
    rev = [e for e in unfiltered if e["post_id"] in revisions]
    assert [e["event_type"] for e in rev] == ["post_created"]
    row = rev[0]["data"]["post"]
    assert (row["post_type"], row["post_status"], row["post_parent"]) == ("revision", "inherit", pid)
    assert row["post_name"] == f"{pid}-revision-v1"
