"""What `make demo` prints for an event: the gist a person reads (README's sample output)."""

from __future__ import annotations

from cdc.dev.demo import gist


def test_a_null_is_shown_as_null_not_a_python_repr() -> None:
    event = {
        "event_type": "post_updated",
        "data": {
            "changes": {
                "post_date_gmt": {"old": None, "new": "2026-11-22T21:47:06Z"},
                "post_status": {"old": "draft", "new": "publish"},
                "post_modified": {"old": "2026-11-22T21:47:05", "new": "2026-11-22T21:47:06"},
            }
        },
    }
    assert gist(event) == "post_date_gmt: null -> '2026-11-22T21:47:06Z'; post_status: 'draft' -> 'publish'"
