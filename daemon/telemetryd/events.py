"""Lines -> events: decode only the fields the pattern needs, and say why a line is skipped."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from msgspec import UNSET

# Reasons a line is not counted; each is a label value of telemetryd_lines_skipped_total.
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_object"
INVALID_UTF8 = "invalid_utf8"
TOO_LONG = "too_long"
EMPTY = "empty"
SKIP_REASONS = (INVALID_JSON, NOT_OBJECT, INVALID_UTF8, TOO_LONG, EMPTY)

# Errors a hostile line can raise from the decoder; anything here means "skip", never "crash".
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError, OverflowError)


def skip_reason(line: bytes, exc: BaseException) -> str:
    if not line.strip():
        return EMPTY
    if isinstance(exc, UnicodeDecodeError):
        return INVALID_UTF8
    if isinstance(exc, msgspec.ValidationError) and str(exc).startswith("Expected `object`"):
        return NOT_OBJECT
    return INVALID_JSON


def json_text(value: Any) -> str:
    """Canonical JSON text of a decoded value, so equal values give equal keys on every host."""
    return msgspec.json.encode(value, order="sorted").decode()


def field_text(value: Any) -> str | None:
    """A field's value as a string: strings as they are, other JSON values as JSON text, missing as None."""
    if value is UNSET:
        return None
    if type(value) is str:
        return value
    return json_text(value)


def _walk(value: Any, rest: Sequence[str]) -> Any:
    for part in rest:
        if type(value) is not dict:
            return UNSET
        value = value.get(part, UNSET)
    return value


class EventSchema:
    """A msgspec Struct built from the config: the decoder skips every field no pattern needs.

    Each top-level field is decoded as `Any` with UNSET as default, so a missing field and a JSON
    null stay distinguishable and a field of any JSON type never fails the whole line.
    """

    def __init__(self, key_fields: Sequence[str], template_field: str) -> None:
        self.key_fields = tuple(key_fields)
        self.template_field = template_field
        tops: list[str] = []
        for path in (*self.key_fields, *([template_field] if template_field else [])):
            top = path.split(".", 1)[0]
            if top not in tops:
                tops.append(top)
        attr = {top: f"f{i}" for i, top in enumerate(tops)}
        fields = [(attr[t], Any, msgspec.field(default=UNSET, name=t)) for t in tops]
        self.struct: type[msgspec.Struct] = msgspec.defstruct("Event", fields, gc=False)
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self.struct)
        key_attrs = [attr[p.split(".", 1)[0]] for p in self.key_fields]
        # The attributes the hot path's second level reads (typed_values.lookup_events): the raw key
        # values and the text, when the template field is a top-level one.
        self.key_attrs = tuple(key_attrs)
        self.template_attr: str | None = (
            attr[template_field] if template_field and "." not in template_field else None
        )
        self.nested = any("." in p for p in self.key_fields)
        self._rests = [tuple(p.split(".")[1:]) for p in self.key_fields]
        # One getter per key field: for the first level when there is no top-level template field (it
        # zips their values with the message shape; otherwise typed_values.first_level reads key_attrs).
        self.key_getters = [operator.attrgetter(a) for a in key_attrs]
        # Raw key values as one tuple: what the slow path normalises.
        self.raw_key: Callable[[Any], tuple[Any, ...]]
        if not key_attrs:
            self.raw_key = lambda ev: ()
        elif len(key_attrs) == 1:
            one = operator.attrgetter(key_attrs[0])
            self.raw_key = lambda ev: (one(ev),)
        else:
            self.raw_key = operator.attrgetter(*key_attrs)
        self.raw_template: Callable[[Any], Any]
        if template_field:
            top_attr = operator.attrgetter(attr[template_field.split(".", 1)[0]])
            t_rest = tuple(template_field.split(".")[1:])
            if t_rest:
                self.raw_template = lambda ev: _walk(top_attr(ev), t_rest)
            else:
                self.raw_template = top_attr
        else:
            self.raw_template = lambda ev: UNSET

    def key_values(self, raw: tuple[Any, ...]) -> tuple[str | None, ...]:
        if self.nested:
            return tuple(field_text(_walk(v, rest)) for v, rest in zip(raw, self._rests, strict=True))
        return tuple(field_text(v) for v in raw)
