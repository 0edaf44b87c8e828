"""Post meta and taxonomy terms written through WordPress's APIs."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import WordPressStream

pytestmark = pytest.mark.e2e


@pytest.fixture
def post(wp: WordPressStream) -> int:
    return int(wp.do("return wp_insert_post(['post_title' => 'Meta host', 'post_status' => 'publish']);").result)


def test_meta_add_update_delete_with_decoded_values(wp: WordPressStream, post: int) -> None:
    op = wp.do(
        """$id = $args['id'];
        add_post_meta($id, 'colour', 'blue');
        add_post_meta($id, 'layout', ['width' => 'wide', 'columns' => [1, 2], 'sidebar' => false, 'ratio' => 1.5]);
        add_post_meta($id, 'greeting', 'Grüße 😀 from 東京');
        add_post_meta($id, 'tag', 'one');
        add_post_meta($id, 'tag', 'two');
        update_post_meta($id, 'colour', 'red');
        update_post_meta($id, 'layout', ['width' => 'narrow']);
        delete_post_meta($id, 'tag', 'one');
        return $id;""",
        id=post,
    )
    assert op.types(post) == [
        "post_meta_added", "post_meta_added", "post_meta_added", "post_meta_added", "post_meta_added",
        "post_meta_updated", "post_meta_updated", "post_meta_deleted",
    ], op.summary()  # fmt: skip
    colour = op.one("post_meta_updated", post, meta_key="colour")["data"]
    assert (colour["previous_value"], colour["value"]) == ("blue", "red")
    assert "value_decoded" not in colour, "plain strings are not PHP-serialized"

    layout = op.one("post_meta_added", post, meta_key="layout")["data"]
    assert layout["value"].startswith("a:4:{")
    assert layout["value_decoded"] == {"width": "wide", "columns": [1, 2], "sidebar": False, "ratio": 1.5}
    updated = op.one("post_meta_updated", post, meta_key="layout")["data"]
    assert updated["value_decoded"] == {"width": "narrow"}
    assert updated["meta_id"] == layout["meta_id"], "update_post_meta rewrites the same row"

    assert op.one("post_meta_added", post, meta_key="greeting")["data"]["value"] == "Grüße 😀 from 東京"

    # Two rows with one key are two meta_ids; deleting one by value leaves the other.
    tags = [e["data"] for e in op.of(post) if e["event_type"] == "post_meta_added" and e["data"]["meta_key"] == "tag"]
    assert [t["value"] for t in tags] == ["one", "two"] and tags[0]["meta_id"] != tags[1]["meta_id"]
    gone = op.one("post_meta_deleted", post, meta_key="tag")["data"]
    assert (gone["meta_id"], gone["previous_value"], gone["value"]) == (tags[0]["meta_id"], "one", None)


def test_delete_all_rows_of_a_key(wp: WordPressStream, post: int) -> None:
    op = wp.do(
        """add_post_meta($args['id'], 'multi', 'a'); add_post_meta($args['id'], 'multi', 'b');
        delete_post_meta($args['id'], 'multi'); return 1;""",
        id=post,
    )
    deleted = sorted(e["data"]["previous_value"] for e in op.of(post) if e["event_type"] == "post_meta_deleted")
    assert deleted == ["a", "b"], op.summary()


def test_categories_and_tags_set_replace_remove(wp: WordPressStream, post: int) -> None:
    # New terms are created on the fly by wp_set_post_tags; the category is created first.
    op = wp.do(
        """$news = wp_insert_category(['cat_name' => 'News']);
        wp_set_post_categories($args['id'], [$news]);
        wp_set_post_tags($args['id'], ['Alpha', 'Beta Gamma']);
        return $news;""",
        id=post,
    )
    added = [(e["data"]["taxonomy"], e["data"]["slug"], e["data"]["name"]) for e in op.of(post)
             if e["event_type"] == "post_term_added"]  # fmt: skip
    assert added == [
        ("category", "news", "News"),
        ("post_tag", "alpha", "Alpha"),
        ("post_tag", "beta-gamma", "Beta Gamma"),
    ]
    removed = [e["data"]["slug"] for e in op.of(post) if e["event_type"] == "post_term_removed"]
    assert removed == ["uncategorized"], "replacing the categories removes the default one"
    assert all(e["data"]["term_id"] and e["data"]["term_taxonomy_id"] for e in op.of(post))

    # Replace the tags: one kept, one removed, one added.
    op = wp.do("wp_set_post_tags($args['id'], ['Alpha', 'Delta']); return 1;", id=post)
    assert [(e["event_type"], e["data"]["slug"]) for e in op.of(post)] == [
        ("post_term_added", "delta"),
        ("post_term_removed", "beta-gamma"),
    ], op.summary()

    # Remove a category with wp_remove_object_terms.
    op = wp.do("wp_remove_object_terms($args['id'], 'news', 'category'); return 1;", id=post)
    assert [(e["event_type"], e["data"]["taxonomy"], e["data"]["slug"]) for e in op.of(post)] == [
        ("post_term_removed", "category", "news")
    ], op.summary()
