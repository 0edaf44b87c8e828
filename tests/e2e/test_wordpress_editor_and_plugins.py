"""The block editor's REST flow, plugin code that writes SQL past WordPress's hooks, and multisite."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import WordPressStream

pytestmark = pytest.mark.e2e

_REST = """$r = new WP_REST_Request('POST', $args['route']);
$r->set_body_params($args['body']);
$res = rest_do_request($r);
$data = $res->get_data();
return ['status' => $res->get_status(), 'id' => $data['id'] ?? null, 'post_status' => $data['status'] ?? null];"""


def test_block_editor_flow_through_rest(wp: WordPressStream) -> None:
    # Opening the editor inserts an auto-draft (filtered: most are never saved).
    op = wp.do("return get_default_post_to_edit('post', true)->ID;")
    pid = op.result
    assert op.events == [], op.summary()

    # First save through REST: auto-draft -> draft is the post's creation for a consumer.
    content = "<!-- wp:paragraph --><p>Hello blocks</p><!-- /wp:paragraph -->"
    op = wp.do(_REST, route=f"/wp/v2/posts/{pid}", body={"title": "Block post", "content": content, "status": "draft"})
    assert op.result["status"] == 200
    assert op.types(pid) == ["post_created", "post_term_added"], op.summary()
    row = op.one("post_created", pid)["data"]["post"]
    assert (row["post_title"], row["post_content"], row["post_status"]) == ("Block post", content, "draft")

    # Autosave of a draft by its author overwrites the post itself.
    op = wp.do(_REST, route=f"/wp/v2/posts/{pid}/autosaves", body={"title": "Block post", "content": "autosaved"})
    assert op.result["status"] == 200
    assert op.types(pid) == ["post_updated"], op.summary()
    assert op.events[0]["data"]["changes"]["post_content"] == {"old": content, "new": "autosaved"}

    # Publish.
    op = wp.do(_REST, route=f"/wp/v2/posts/{pid}", body={"status": "publish"})
    assert op.result["post_status"] == "publish"
    assert op.types(pid) == ["post_updated", "post_published"], op.summary()
    assert op.one("post_published", pid)["data"] == {"from": "draft", "to": "publish"}
    assert op.one("post_updated", pid)["data"]["changes"]["post_name"] == {"old": "", "new": "block-post"}

    # Autosave of a published post is a separate autosave revision: filtered, the post is untouched.
    op = wp.do(_REST, route=f"/wp/v2/posts/{pid}/autosaves", body={"title": "Block post", "content": "draft edit"})
    assert op.result["status"] == 200 and op.result["id"] != pid
    assert op.events == [], op.summary()
    autosave = wp.replay(op, exclude_post_types=[])
    assert [(e["event_type"], e["data"]["post"]["post_name"]) for e in autosave] == [
        ("post_created", f"{pid}-autosave-v1")
    ]


def test_plugin_writes_that_skip_hooks(wp: WordPressStream) -> None:
    ids = wp.do(
        """$a = wp_insert_post(['post_title' => 'Plugin A', 'post_status' => 'publish', 'comment_status' => 'open']);
        $b = wp_insert_post(['post_title' => 'Plugin B', 'post_status' => 'publish', 'comment_status' => 'open']);
        return [$a, $b];"""
    ).result
    a, b = ids

    # $wpdb->update of a status: no hooks, no post_modified bump, still a lifecycle event.
    op = wp.do(
        "global $wpdb; return $wpdb->update($wpdb->posts, ['post_status' => 'private'], ['ID' => $args['id']]);", id=a
    )
    assert op.result == 1
    assert op.types(a) == ["post_updated", "post_unpublished"], op.summary()
    assert op.one("post_updated", a)["data"]["changes"] == {"post_status": {"old": "publish", "new": "private"}}

    # One raw UPDATE of many rows: one event per changed row, each keyed by its own post.
    op = wp.do(
        """global $wpdb;
        $ids = (int) $args['a'] . ',' . (int) $args['b'];
        return $wpdb->query("UPDATE $wpdb->posts SET comment_status = 'closed' WHERE ID IN ($ids)");""",
        a=a,
        b=b,
    )
    assert op.result == 2
    assert [(e["post_id"], e["event_type"]) for e in op.events] == [(a, "post_updated"), (b, "post_updated")]
    assert op.events[0]["source"]["pos"] == op.events[1]["source"]["pos"], "one rows event"
    assert [e["source"]["row"] for e in op.events] == [0, 1]

    # $wpdb->insert of meta.
    op = wp.do(
        "global $wpdb; $wpdb->insert($wpdb->postmeta, ['post_id' => $args['id'], 'meta_key' => '_price', "
        "'meta_value' => '9.99']); return $wpdb->insert_id;",
        id=b,
    )
    price = op.one("post_meta_added", b)["data"]
    assert (price["meta_id"], price["meta_key"], price["value"]) == (op.result, "_price", "9.99")


def test_plugin_transaction_commits_and_rollback_produces_nothing(wp: WordPressStream) -> None:
    a, b = wp.do(
        """$t = wp_insert_term('Txn tag', 'post_tag');
        return [wp_insert_post(['post_title' => 'Txn A', 'post_status' => 'publish']),
                wp_insert_post(['post_title' => 'Txn B', 'post_status' => 'draft'])];"""
    ).result
    op = wp.do(
        """global $wpdb;
        $tt = get_term_by('slug', 'txn-tag', 'post_tag')->term_taxonomy_id;
        $wpdb->query('START TRANSACTION');
        $wpdb->update($wpdb->posts, ['post_title' => 'Txn A (edited)'], ['ID' => $args['a']]);
        $wpdb->update($wpdb->posts, ['post_status' => 'publish'], ['ID' => $args['b']]);
        $wpdb->insert($wpdb->postmeta, ['post_id' => $args['a'], 'meta_key' => 'batch', 'meta_value' => 'yes']);
        $wpdb->insert($wpdb->term_relationships, ['object_id' => $args['b'], 'term_taxonomy_id' => $tt]);
        $wpdb->query('COMMIT');
        return $tt;""",
        a=a,
        b=b,
    )
    assert [(e["post_id"], e["event_type"]) for e in op.events] == [
        (a, "post_updated"), (b, "post_updated"), (b, "post_published"), (a, "post_meta_added"), (b, "post_term_added"),
    ], op.summary()  # fmt: skip
    gtids = {e["source"]["gtid"] for e in op.events}
    assert len(gtids) == 1, "one transaction, one GTID on every event"
    assert op.one("post_term_added", b)["data"]["slug"] == "txn-tag"

    op = wp.do(
        """global $wpdb;
        $wpdb->query('START TRANSACTION');
        $wpdb->update($wpdb->posts, ['post_title' => 'Never'], ['ID' => $args['a']]);
        $wpdb->delete($wpdb->postmeta, ['post_id' => $args['a']]);
        $wpdb->query('ROLLBACK');
        return $wpdb->get_var($wpdb->prepare("SELECT post_title FROM $wpdb->posts WHERE ID = %d", $args['a']));""",
        a=a,
    )
    assert op.result == "Txn A (edited)"
    assert op.events == [], op.summary()
    assert wp.replay(op, exclude_post_types=[], exclude_post_statuses=[], exclude_meta_keys=[]) == []


def test_multisite_second_blog(wp: WordPressStream) -> None:
    # Blog 2 was created by wpmu_create_blog (wp_2_* tables); its post ids start again at 1.
    op = wp.do(
        """switch_to_blog(2);
        $p = wp_insert_post(['post_title' => 'Blog two post', 'post_status' => 'publish']);
        add_post_meta($p, 'where', 'blog two');
        restore_current_blog();
        return $p;"""
    )
    pid = op.result
    assert op.types(pid, blog_id=2) == ["post_created", "post_published", "post_term_added", "post_meta_added"]
    assert {e["blog_id"] for e in op.events} == {2}
    assert {e["source"]["table"] for e in op.events} == {"wp_2_posts", "wp_2_term_relationships", "wp_2_postmeta"}

    # The same post id on both blogs: distinct keys, distinct events.
    op = wp.do(
        """global $wpdb;
        $wpdb->update($wpdb->posts, ['post_title' => 'Blog one title'], ['ID' => $args['id']]);
        switch_to_blog(2);
        $wpdb->update($wpdb->posts, ['post_title' => 'Blog two title'], ['ID' => $args['id']]);
        restore_current_blog();
        return 1;""",
        id=1,
    )
    titles = {(e["blog_id"], e["post_id"]): e["data"]["changes"]["post_title"]["new"] for e in op.events}
    assert titles == {(1, 1): "Blog one title", (2, 1): "Blog two title"}
    assert sorted(op.keys) == ["1:1", "2:1"], "keys are blog:post, so equal post ids do not collide"
    assert all(k == f"{e['blog_id']}:{e['post_id']}" for k, e in zip(op.keys, op.events, strict=True))
