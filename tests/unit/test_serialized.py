from __future__ import annotations

from cdc.mapping.serialized import decode_php, looks_serialized


def dec(raw: str, max_bytes: int = 1 << 20, max_depth: int = 64):
    return decode_php(raw, max_bytes=max_bytes, max_depth=max_depth)


def test_nested_arrays_become_lists_and_objects() -> None:
    d = dec('a:2:{s:6:"layout";s:4:"wide";s:4:"tags";a:2:{i:0;s:1:"x";i:1;s:1:"y";}}')
    assert d.ok and d.value == {"layout": "wide", "tags": ["x", "y"]}


def test_sparse_int_keys_stay_an_object() -> None:
    assert dec('a:2:{i:3;s:1:"a";i:7;s:1:"b";}').value == {"3": "a", "7": "b"}


def test_scalars() -> None:
    assert dec("b:1;").value is True
    assert dec("i:-42;").value == -42
    assert dec("d:1.5;").value == 1.5
    assert dec("N;").ok and dec("N;").value is None


def test_multibyte_lengths_are_bytes() -> None:
    assert dec('s:4:"😀";').value == "😀"
    assert dec('s:6:"Grüße";').ok is False  # Grüße is 7 bytes
    assert dec('s:7:"Grüße";').value == "Grüße"


def test_php_object_is_an_inert_record() -> None:
    d = dec('O:8:"stdClass":2:{s:1:"a";i:1;s:1:"b";a:1:{i:0;s:1:"z";}}')
    assert d.ok and d.value == {"__php_class__": "stdClass", "a": 1, "b": ["z"]}


def test_plain_strings_are_not_decoded_and_carry_no_error() -> None:
    for raw in ("hello", "", "a:b", "12", "s:3"):
        d = dec(raw)
        assert not d.ok and d.error is None, raw


def test_malformed_input_is_reported_not_raised() -> None:
    for raw in ('a:2:{i:0;s:1:"x";}', 's:99999999:"x";', 'a:1:{i:0;s:1:"x";}}', 'O:1:"X":1:{s:1:"a";}'):
        d = dec(raw)
        assert not d.ok and d.error and "malformed" in d.error, raw


def test_trailing_garbage_is_malformed() -> None:
    d = dec('s:1:"x";s:1:"y";')
    assert not d.ok and "trailing" in (d.error or "")


def test_depth_and_size_are_bounded() -> None:
    deep = "a:1:{i:0;" * 5000 + "N;" + "}" * 5000
    d = dec(deep)
    assert not d.ok and "deeper" in (d.error or "")
    assert dec("a:1:{i:0;a:1:{i:0;N;}}", max_depth=1).ok is False
    assert dec("a:1:{i:0;a:1:{i:0;N;}}", max_depth=2).ok is True
    big = 's:2000:"' + "x" * 2000 + '";'
    assert "max_decode_bytes" in (dec(big, max_bytes=100).error or "")


def test_looks_serialized_matches_wordpress_rules() -> None:
    assert looks_serialized(" a:0:{} ")
    assert looks_serialized("b:0;")
    assert not looks_serialized("a:0:{")
    assert not looks_serialized("x:1;")
