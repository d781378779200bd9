"""Request validation (web/schema.py): what a 422 says about odd field names."""

from __future__ import annotations

import pytest

from web.schema import ApiError, body_problems, check_text, invalid

STRICT = {"type": "object", "additionalProperties": False, "required": ["host"],
          "properties": {"host": {"type": "string"}}}


@pytest.mark.parametrize("name, shown", [("\x00", "'\\x00'"), ("a\nb", "'a\\nb'"), ("\ud800", "'\\ud800'"),
                                         ("Grüße", "Grüße")])
def test_unknown_field_names_are_echoed_as_storable_printable_text(name, shown):
    fields = body_problems(STRICT, {"host": "h", name: 1})
    assert fields == {shown: "is not a known field"}
    with pytest.raises(ApiError) as caught:
        invalid(fields)
    message = caught.value.message
    check_text(message)  # a valid JSON string a client (and Postgres) can take
    assert message.isprintable()
