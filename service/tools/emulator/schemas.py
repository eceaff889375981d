"""Synthesised instances of any JSON Schema, and OpenAI's strict-mode check of a schema.

The emulator answers a Structured Outputs request without inference: `instance` builds a
value valid against the caller's schema from a `random.Random` seeded by a SHA-256 of the
schema and the input text, so the same request always gets the same answer and another text
usually gets other values. Strings are windows of the text's own words (a fixed filler when
the text has none).

Honoured: `type` (a name or a list; inferred from the other keywords when missing), `enum`,
`const`, `anyOf`/`oneOf` (one branch, picked from the seed), `allOf` (branches merged),
`$ref` to `#`, `#/$defs/...`, `#/definitions/...` or any JSON pointer (~0 ~1 and %-escapes)
and `#name` anchors; objects (`properties`, `required`, `additionalProperties`,
`patternProperties` for required keys, `min/maxProperties`), arrays (`items`, `prefixItems`,
`min/maxItems`, `uniqueItems`, `contains`), strings (`min/maxLength`, `format`, `pattern`),
numbers (`minimum`, `maximum`, both exclusive bounds, `multipleOf`). Recursive schemas end:
past depth 5 the generator prefers null branches, scalar branches, the fewest items and no
optional properties.

Patterns: a small generator covers literals, escapes (\\n \\t \\xHH \\uHHHH, escaped
punctuation), `.`, classes `[...]` `[^...]` with ranges, `\\d \\w \\s` and their negations,
groups (capturing, `(?:...)`, named, inline flags), alternation, quantifiers `? * + {n} {n,}
{n,m}` (lazy or possessive alike) and the anchors `^ $ \\A \\Z \\b`. Every candidate is checked
with a search (the `regex` engine, each check given 50 ms), as JSON Schema's `pattern` is
not anchored. Beyond the subset (lookarounds,
backreferences, `\\p{...}`, ...) a few fallback strings are tried; when none matches, the
last one is returned anyway, and that string may not match the pattern.

Not honoured (ignored or best effort): `not`, `if`/`then`/`else`, `dependent*`,
`propertyNames`, `unevaluated*`, `$dynamicRef`, references outside the document, `oneOf`'s
exclusivity (the branch picked may match another too), `allOf` branches whose
`additionalProperties: false` excludes another branch's keys, a `format` together with
length limits, and JSON's 1 == 1.0 in `enum` and `uniqueItems`.

`SchemaError` is raised only when no value exists (a `false` schema, an empty enum, a
minimum above its maximum, a recursion that cannot end, ...) or when the value would be
too large (more than 10,000 values or 1,000,000 characters), never for odd keywords.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fractions
import hashlib
import itertools
import json
import math
import random
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import regex  # type: ignore[import-untyped]  # `timeout=`: re has no way to stop a search

__all__ = ["SchemaError", "instance", "strict_problem"]

_DEEP = 5  # past this nesting, prefer values that end a recursion
_MAX_DEPTH = 64  # a schema that still nests here cannot end (OpenAI allows 10)
_MAX_HOPS = 256  # $ref, allOf and anyOf steps without nesting: more is a reference loop
_MAX_NODES = 10_000  # values in one instance
_MAX_CHARS = 1_000_000  # characters in the strings of one instance
_MATCH_SECONDS = 0.05  # to check one candidate against a pattern
_STRICT_NESTING = 10
_STRICT_PROPERTIES = 5000

_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_SCALARS = {"string", "number", "integer", "boolean"}
_HINTS = {
    "object": ("properties", "required", "additionalProperties", "patternProperties"),
    "array": ("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_SUBSCHEMAS = ("additionalProperties", "items", "additionalItems", "contains", "propertyNames")
_FILLER = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
_WORD = re.compile(r"\w+(?:'\w+)*")
_MISSING: Any = object()


class SchemaError(ValueError):
    """A schema that no JSON value satisfies, or whose smallest instance is too large."""


def instance(schema: dict[str, Any], text: str) -> Any:
    """A JSON value valid against `schema`, derived deterministically from `text`."""
    try:
        return _Gen(schema, text).value(schema, 0)
    except (ArithmeticError, RecursionError) as exc:  # numbers or nesting beyond any use
        raise SchemaError(f"no instance can be built ({type(exc).__name__})") from None


def _finds(pattern: str, text: str) -> bool | None:
    """Whether `pattern` finds a match in `text` (JSON Schema's unanchored `pattern`); None
    when that cannot be told: not a pattern the engine reads, or no answer within
    _MATCH_SECONDS (a pattern that backtracks exponentially must not stall the emulator)."""
    try:
        return regex.search(pattern, text, timeout=_MATCH_SECONDS) is not None
    except TimeoutError:
        return None
    except (regex.error, RecursionError, OverflowError, ValueError):
        return None


# --- helpers on schemas --------------------------------------------------------------------


def _canonical(value: Any) -> str:
    """A stable text of a schema; repr() when it is not plain JSON."""
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        try:
            return repr(value)
        except RecursionError:
            return ""


def _number(value: Any) -> float | int | None:
    """A finite number, or None for anything else (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _count(schema: dict[str, Any], key: str) -> int | None:
    """A non-negative integer keyword such as minItems, or None when absent or odd."""
    value = _number(schema.get(key))
    return None if value is None or value < 0 else math.ceil(value)


def _range(schema: dict[str, Any], low: str, high: str) -> tuple[int, int | None]:
    """A keyword pair such as minItems/maxItems; SchemaError when the range is empty."""
    lo, hi = _count(schema, low) or 0, _count(schema, high)
    if hi is not None and lo > hi:
        raise SchemaError(f"{low} {lo} is above {high} {hi}: no value satisfies the schema")
    return lo, hi


def _declared_types(schema: dict[str, Any]) -> list[str] | None:
    """The known types `type` names, or None when it names none."""
    declared = schema.get("type")
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list):
        return None
    known = [t for t in _TYPES if t in names]
    return known or None


def _types(schema: dict[str, Any]) -> list[str] | None:
    """The declared types, else the one the keywords suggest, else None (any value)."""
    declared = _declared_types(schema)
    if declared is not None:
        return declared
    return next(([t] for t, keys in _HINTS.items() if any(k in schema for k in keys)), None)


def _is_type(value: Any, name: str) -> bool:
    """Whether a value has a JSON Schema type (1.0 is an integer, True is not)."""
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    kinds: dict[str, Any] = {
        "null": type(None),
        "boolean": bool,
        "number": int | float,
        "string": str,
        "array": list,
        "object": dict,
    }
    return name in kinds and isinstance(value, kinds[name])


def _pointer(root: Any, fragment: str) -> Any:
    """The node a JSON pointer names in `root`, or _MISSING."""
    node = root
    for raw in fragment.split("/")[1:]:
        part = urllib.parse.unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _anchor(node: Any, name: str, budget: list[int]) -> Any:
    """The subschema whose $anchor is `name`, or _MISSING (a bounded walk)."""
    budget[0] -= 1
    if budget[0] < 0:
        return _MISSING
    if isinstance(node, dict):
        if node.get("$anchor") == name:
            return node
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return _MISSING
    for child in children:
        found = _anchor(child, name, budget)
        if found is not _MISSING:
            return found
    return _MISSING


def _resolve(root: Any, ref: str) -> Any:
    """What a $ref inside `root` points to, or _MISSING (other documents are not fetched)."""
    base, _, fragment = ref.partition("#")
    own_id = root.get("$id") if isinstance(root, dict) else None
    if base and base != own_id:
        return _MISSING
    if fragment == "" or fragment.startswith("/"):
        return _pointer(root, fragment)
    return _anchor(root, fragment, [10_000])


def _meet_types(a: Any, b: Any) -> list[str]:
    """The types both `type` keywords allow (integer is the meet of integer and number)."""
    left = _declared_types({"type": a}) or list(_TYPES)
    right = _declared_types({"type": b}) or list(_TYPES)
    out: list[str] = []
    for t in left:
        for u in right:
            meet = t if t == u else "integer" if {t, u} == {"integer", "number"} else None
            if meet is not None and meet not in out:
                out.append(meet)
    return out


def _merge_key(out: dict[str, Any], key: str, value: Any) -> None:
    """Add one keyword of an allOf branch to the merged schema `out`."""
    mine = out[key]
    if key == "properties" and isinstance(mine, dict) and isinstance(value, dict):
        both = {k: {"allOf": [mine[k], v]} for k, v in value.items() if k in mine}
        out[key] = {**mine, **value, **both}
    elif key == "required" and isinstance(mine, list) and isinstance(value, list):
        out[key] = [*mine, *(k for k in value if k not in mine)]
    elif key == "type":
        out[key] = _meet_types(mine, value)
        if not out[key]:
            raise SchemaError(f"allOf asks for types {mine!r} and {value!r} at once")
    elif key == "enum" and isinstance(mine, list) and isinstance(value, list):
        out[key] = [v for v in mine if v in value]
    elif key == "const" and mine != value:
        raise SchemaError(f"allOf asks for the constants {mine!r} and {value!r} at once")
    elif key in _LOWER + _UPPER and _number(mine) is not None and _number(value) is not None:
        out[key] = max(mine, value) if key in _LOWER else min(mine, value)
    elif key in _SUBSCHEMAS and (mine is True or value is False):
        out[key] = value  # true constrains nothing; false constrains everything
    elif key == "uniqueItems":
        out[key] = mine is True or value is True
    elif key in ("anyOf", "oneOf") and isinstance(mine, list) and isinstance(value, list):
        out[key] = _cross(mine, value)
    elif key in ("$ref", "allOf"):
        # a second $ref waits in allOf, merged once the first is resolved
        pending: list[Any] = out["allOf"] if isinstance(out.get("allOf"), list) else []
        extra = value if key == "allOf" and isinstance(value, list) else [{key: value}]
        out["allOf"] = [*pending, *extra]
    elif isinstance(mine, dict) and isinstance(value, dict):
        out[key] = {"allOf": [mine, value]}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One schema holding the constraints of both, as far as simple keywords go."""
    out = dict(a)
    for key, value in b.items():
        if key in out:
            _merge_key(out, key, value)
        else:
            out[key] = value
    for side in (a, b):
        # a side closed by additionalProperties: false admits none of the other's keys
        props = side.get("properties")
        if side.get("additionalProperties") is False and isinstance(out.get("properties"), dict):
            known = props if isinstance(props, dict) else {}
            out["properties"] = {k: v for k, v in out["properties"].items() if k in known}
    return out


def _cross(left: list[Any], right: list[Any]) -> list[Any]:
    """anyOf both lists: every pair of branches merged (at most 64), unsatisfiable ones out."""
    pairs: list[Any] = []
    for x in left:
        for y in right:
            if x is False or y is False or len(pairs) >= 64:
                continue
            with contextlib.suppress(SchemaError):
                pairs.append(
                    _merge(x if isinstance(x, dict) else {}, y if isinstance(y, dict) else {})
                )
    return pairs


def _without(schema: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The schema without some keywords."""
    return {k: v for k, v in schema.items() if k not in keys}


def _mentions_ref(node: Any, budget: list[int]) -> bool:
    """Whether a $ref occurs inside `node` (True when the walk runs out of budget)."""
    budget[0] -= 1
    if budget[0] < 0:
        return True
    if isinstance(node, dict):
        return "$ref" in node or any(_mentions_ref(v, budget) for v in node.values())
    if isinstance(node, list):
        return any(_mentions_ref(v, budget) for v in node)
    return False


def _enum_values(schema: dict[str, Any]) -> list[Any]:
    """The enum's values that have one of the schema's declared types."""
    allowed = _declared_types(schema)
    return [v for v in schema["enum"] if allowed is None or any(_is_type(v, t) for t in allowed)]


def _nullish(schema: dict[str, Any]) -> bool:
    """Whether a branch admits only null."""
    return _declared_types(schema) == ["null"] or ("const" in schema and schema["const"] is None)


# --- the generator -------------------------------------------------------------------------


class _Gen:
    """One instance in the making: the seeded random source, the words, the budgets."""

    def __init__(self, root: Any, text: str) -> None:
        seed = _canonical(root).encode() + b"\0" + text.encode("utf-8", "surrogatepass")
        self.root = root
        self.rng = random.Random(int.from_bytes(hashlib.sha256(seed).digest(), "big"))
        self.words = _WORD.findall(text) or _FILLER
        self.nodes = 0
        self.chars = 0
        self.anys = 0

    def value(self, schema: Any, depth: int) -> Any:
        """A value valid against `schema`, which sits `depth` containers deep."""
        if schema is False:
            raise SchemaError("the schema `false` admits no value")
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise SchemaError(f"an instance would need more than {_MAX_NODES} values: too large")
        if depth > _MAX_DEPTH:
            raise SchemaError(f"the schema nests deeper than {_MAX_DEPTH} levels and never ends")
        if not isinstance(schema, dict):
            return self.anything()  # `true`, or junk where a schema should be
        schema = self.reduce(schema, depth)
        if "const" in schema:
            if isinstance(schema.get("enum"), list) and schema["const"] not in schema["enum"]:
                raise SchemaError("the const is not one of the enum's values")
            if not _enum_values({"type": schema.get("type"), "enum": [schema["const"]]}):
                raise SchemaError("the const is not of the schema's type")
            return copy.deepcopy(schema["const"])
        if isinstance(schema.get("enum"), list):
            return self.enum(schema)
        return self.typed(self.pick_type(schema, depth), schema, depth)

    def typed(self, kind: str | None, schema: dict[str, Any], depth: int) -> Any:
        """A value of one type; any value (the text's first word) without a type."""
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind == "string":
            return self.string(schema, depth)
        if kind in ("number", "integer"):
            return _number_value(self.rng, schema, integer=kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        return None if kind == "null" else self.anything()

    def frugal(self, depth: int) -> bool:
        """Whether to build the smallest value: deep in a recursion, or far into the budget."""
        return depth > _DEEP or self.nodes > _MAX_NODES // 4

    def anything(self) -> str:
        """Any value: the text's first word, then its next words (for uniqueItems)."""
        self.anys += 1
        word = self.words[(self.anys - 1) % len(self.words)]
        return word if self.anys <= len(self.words) else f"{word} {self.anys}"

    # -- $ref, allOf, anyOf, oneOf: reduced to one plain schema

    def reduce(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """The schema with its $ref resolved, its allOf merged and one anyOf/oneOf branch."""
        for _ in range(_MAX_HOPS):
            if isinstance(schema.get("$ref"), str):
                target = _resolve(self.root, schema["$ref"])
                if target is False:
                    raise SchemaError(f"$ref {schema['$ref']!r} points to `false`")
                base = target if isinstance(target, dict) else {}
                schema = _merge(base, _without(schema, "$ref"))
            elif isinstance(schema.get("allOf"), list):
                schema = self.merge_all(schema)
            elif isinstance(schema.get("anyOf"), list) or isinstance(schema.get("oneOf"), list):
                key = "anyOf" if isinstance(schema.get("anyOf"), list) else "oneOf"
                schema = self.branch(_without(schema, key), schema[key], depth)
            else:
                return schema
        return _without(schema, "$ref", "allOf", "anyOf", "oneOf")  # a reference loop

    def merge_all(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The schema with every allOf branch merged into it."""
        merged = _without(schema, "allOf")
        for part in schema["allOf"]:
            if part is False:
                raise SchemaError("allOf holds `false`: no value satisfies it")
            if isinstance(part, dict):
                merged = _merge(merged, part)
        return merged

    def branch(self, rest: dict[str, Any], branches: list[Any], depth: int) -> dict[str, Any]:
        """One branch merged with its siblings; at depth, one that ends a recursion."""
        options = []
        for option in branches:
            if option is False:
                continue
            try:
                options.append(_merge(rest, option) if isinstance(option, dict) else dict(rest))
            except SchemaError:
                continue
        if not options:
            raise SchemaError("no branch of anyOf/oneOf can be satisfied")
        if self.frugal(depth):
            ranks = [self.rank(o) for o in options]
            options = [o for o, r in zip(options, ranks, strict=True) if r == min(ranks)]
        elif len(options) > 1 and self.rng.random() < 0.8:
            options = [o for o in options if not _nullish(o)] or options  # mostly real values
        return self.rng.choice(options)

    def rank(self, schema: dict[str, Any]) -> int:
        """How surely a branch ends: null 0, scalar 1, container 2, container with a $ref 3."""
        for _ in range(8):
            ref = schema.get("$ref")
            target = _resolve(self.root, ref) if isinstance(ref, str) else _MISSING
            if not isinstance(target, dict):
                break
            try:
                schema = _merge(target, _without(schema, "$ref"))
            except SchemaError:
                return 4
        types = set(_declared_types(schema) or ())
        if "const" in schema or "enum" in schema or "null" in types:
            return 0
        if types and types <= _SCALARS:
            return 1
        return 3 if _mentions_ref(schema, [200]) else 2

    def pick_type(self, schema: dict[str, Any], depth: int) -> str | None:
        """One of the allowed types: rarely null near the top, the plainest one deep down."""
        types = _types(schema)
        if types is None or len(types) == 1:
            return types[0] if types else None
        if self.frugal(depth):
            plain = [t for t in types if t == "null"] or [t for t in types if t in _SCALARS]
            types = plain or types
        elif "null" in types and self.rng.random() < 0.8:
            types = [t for t in types if t != "null"]
        return self.rng.choice(types)

    def enum(self, schema: dict[str, Any]) -> Any:
        """One of the enum's values of the schema's type."""
        values = _enum_values(schema)
        if not values:
            raise SchemaError("the enum offers no value of the schema's type")
        return copy.deepcopy(self.rng.choice(values))

    # -- objects and arrays

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """Every required key, some optional ones, never a key beyond the properties."""
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        required = [k for k in required if isinstance(k, str)] if isinstance(required, list) else []
        lo, hi = _range(schema, "minProperties", "maxProperties")
        if lo > _MAX_NODES:
            raise SchemaError(f"minProperties {lo} is too large")
        if hi is not None and len(set(required)) > hi:
            raise SchemaError(f"{len(set(required))} required keys exceed maxProperties {hi}")
        room = (hi if hi is not None else len(props)) - len(set(required))
        chosen = set(required)
        for key in props:
            optional = key not in chosen and props[key] is not False
            if room > 0 and optional and (len(chosen) < lo or self.maybe(depth)):
                chosen.add(key)
                room -= 1
        out = {k: self.value(v, depth + 1) for k, v in props.items() if k in chosen}
        for key in required:
            if key not in out:
                out[key] = self.value(self.extra_schema(schema, key), depth + 1)
        self.pad_object(schema, out, lo, depth)
        return out

    def maybe(self, depth: int) -> bool:
        """Whether to include an optional property: often near the top, never deep down."""
        return not self.frugal(depth) and self.rng.random() < 0.7

    def extra_schema(self, schema: dict[str, Any], key: str) -> Any:
        """The schema of a key outside `properties`: a matching patternProperties one,
        else additionalProperties (SchemaError when that forbids the key)."""
        patterns = schema.get("patternProperties")
        for pattern, sub in (patterns if isinstance(patterns, dict) else {}).items():
            try:
                if isinstance(pattern, str) and _finds(pattern, key):
                    return sub
            except TypeError:
                continue
        extra = schema.get("additionalProperties", True)
        if extra is False:
            raise SchemaError(f"required key {key!r} is not a property and no other is allowed")
        return extra

    def pad_object(self, schema: dict[str, Any], out: dict[str, Any], lo: int, depth: int) -> None:
        """New keys from the text's words until minProperties is met (optional ones are in)."""
        extra = schema.get("additionalProperties", True)
        props = schema.get("properties")
        taken = set(props) if isinstance(props, dict) else set()
        while len(out) < lo:
            if extra is False:
                raise SchemaError(f"minProperties {lo} exceeds the keys the schema allows")
            key = self.rng.choice(self.words).lower()
            key = key if key not in out and key not in taken else f"{key}_{len(out)}"
            out[key] = self.value(extra, depth + 1)

    def array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        """Between minItems and maxItems values, few (1-3) when the schema leaves it open."""
        lo, hi = _range(schema, "minItems", "maxItems")
        if lo > _MAX_NODES:
            raise SchemaError(f"minItems {lo} is too large: an instance holds {_MAX_NODES} values")
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", True)
        if isinstance(items, list):  # the tuple form of drafts before 2020-12
            prefix, items = items, schema.get("additionalItems", True)
        if items is False:
            if lo > len(prefix):
                raise SchemaError(f"minItems {lo} exceeds the {len(prefix)} items allowed")
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        count = self.length(lo, hi, depth)
        contains = schema.get("contains")
        if isinstance(contains, dict) and count == 0 and (hi is None or hi > 0):
            count = 1
        unique = schema.get("uniqueItems") is True
        out: list[Any] = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            if i == 0 and isinstance(contains, dict):
                sub = _merge(sub if isinstance(sub, dict) else {}, contains)
            value = self.item(sub, depth, out, unique=unique)
            if unique and _canonical(value) in {_canonical(v) for v in out}:
                if len(out) >= lo:
                    break  # the items allow no other value: a shorter array will do
                if isinstance(sub, dict) and self.choices(sub, depth):
                    raise SchemaError(f"uniqueItems: the items allow fewer than {lo} values")
            out.append(value)
        return out

    def length(self, lo: int, hi: int | None, depth: int) -> int:
        """How many items: minItems deep down, else 1-3 within the bounds."""
        if self.frugal(depth):
            return lo
        top = max(lo, 3 if hi is None else min(hi, 3))
        return self.rng.randint(min(max(lo, 1), top), top)

    def item(self, schema: Any, depth: int, before: list[Any], *, unique: bool) -> Any:
        """One item; for uniqueItems a few tries at one unlike the items before it."""
        seen = {_canonical(v) for v in before} if unique else set()
        if unique and isinstance(schema, dict):
            fresh = [v for v in self.choices(schema, depth) if _canonical(v) not in seen]
            schema = {"enum": fresh} if fresh else schema  # a value not taken yet, if any
        value = self.value(schema, depth + 1)
        for _ in range(5):
            if _canonical(value) not in seen:
                break
            value = self.value(schema, depth + 1)
        return value

    def choices(self, schema: dict[str, Any], depth: int) -> list[Any]:
        """The few values a schema allows when it is an enum, a const or a boolean, else []."""
        try:
            schema = self.reduce(copy.deepcopy(schema), depth)
        except SchemaError:
            return []
        if "const" in schema:
            return [schema["const"]]
        if isinstance(schema.get("enum"), list):
            return _enum_values(schema)
        types = _types(schema)
        return [False, True] if types == ["boolean"] else [None] if types == ["null"] else []

    # -- strings

    def string(self, schema: dict[str, Any], depth: int) -> str:
        """Words of the text, a format's shape, or a pattern's match, within the lengths."""
        lo, hi = _range(schema, "minLength", "maxLength")
        if lo > _MAX_CHARS:
            raise SchemaError(f"minLength {lo} is too large")
        pattern, fmt = schema.get("pattern"), schema.get("format")
        if isinstance(pattern, str):
            shaped = _FORMATS.get(fmt) if isinstance(fmt, str) else None
            text = self.patterned(pattern, lo, hi, shaped)
        elif isinstance(fmt, str) and fmt in _FORMATS:
            text = _FORMATS[fmt](self)
        else:
            text = self.fit(self.phrase(depth), lo, hi)
        self.chars += len(text)
        if self.chars > _MAX_CHARS:
            raise SchemaError(f"an instance would hold more than {_MAX_CHARS} characters")
        return text

    def phrase(self, depth: int) -> str:
        """A window of the text's words, at a seeded place, of seeded length."""
        count = min(len(self.words), self.rng.randint(1, 2 if self.frugal(depth) else 8))
        start = self.rng.randrange(len(self.words) - count + 1)
        return " ".join(self.words[start : start + count])

    def fit(self, text: str, lo: int, hi: int | None) -> str:
        """The text grown with more words to minLength and cut to maxLength."""
        i = self.rng.randrange(len(self.words))
        parts = [text] if text else []
        size = len(text)
        while size < lo:
            word = self.words[i % len(self.words)]
            size += len(word) + (1 if parts else 0)
            parts.append(word)
            i += 1
        text = " ".join(parts)
        if hi is not None and len(text) > hi:
            text = text[:hi]
            text = text.rstrip() if len(text.rstrip()) >= lo else text
        return text

    def slug(self) -> str:
        """A lowercase ASCII word of the text, for emails, hosts and paths."""
        for _ in range(8):
            word = re.sub(r"[^a-z0-9]", "", self.rng.choice(self.words).lower())
            if word:
                return word[:30]
        return "user"

    def generated(self, tree: _Node, lo: int) -> Iterator[str]:
        """Strings of the pattern's language, longer on later tries."""
        budget = min(_MAX_CHARS, max(10_000, 4 * lo))
        for attempt in range(12):
            # open repetitions grow by 3 at first, then enough to reach minLength
            stretch = 3 if attempt < 6 else max(3, lo)
            try:
                made = _emit(tree, self.rng, stretch, [budget])
            except _Unsupported:
                continue
            yield self.fit(made, lo, None) if len(made) < lo else made

    def patterned(
        self, pattern: str, lo: int, hi: int | None, shaped: Callable[[_Gen], str] | None
    ) -> str:
        """A string the pattern finds (re.search), within the lengths; best effort beyond
        the generator's subset, when the result may not match."""
        last = ""
        formatted = [shaped(self) for _ in range(5)] if shaped else []  # a format that fits
        for candidate in itertools.chain(formatted, self.candidates(pattern, lo, hi)):
            last = candidate
            fits = lo <= len(candidate) and (hi is None or len(candidate) <= hi)
            if fits and _finds(pattern, candidate) is not False:
                return candidate
        return last

    def candidates(self, pattern: str, lo: int, hi: int | None) -> Iterator[str]:
        """Strings the generator makes from the pattern, then a few fallbacks."""
        with contextlib.suppress(_Unsupported, RecursionError):  # beyond the subset
            yield from self.generated(_RegexParser(pattern).parse(), lo)
        literal = re.sub(r"\\(.)", r"\1", pattern.strip("^$"))
        for fallback in (literal, "", "0", "a", "A", "a1"):
            yield self.fit(fallback, lo, hi)
        yield self.fit(self.phrase(0), lo, hi)


def _date(gen: _Gen) -> str:
    """A day between 2000 and 2030."""
    day = datetime.date(2000, 1, 1) + datetime.timedelta(days=gen.rng.randrange(11_000))
    return day.isoformat()


def _time(gen: _Gen) -> str:
    """A UTC time of day, as RFC 3339 wants it (with an offset)."""
    h, m, s = gen.rng.randrange(24), gen.rng.randrange(60), gen.rng.randrange(60)
    return f"{h:02d}:{m:02d}:{s:02d}Z"


def _duration(gen: _Gen) -> str:
    """An ISO 8601 duration of days, hours and minutes."""
    return f"P{gen.rng.randint(0, 30)}DT{gen.rng.randint(0, 23)}H{gen.rng.randint(0, 59)}M"


def _ipv4(gen: _Gen) -> str:
    """A dotted quad without 0 or 255 parts."""
    return ".".join(str(gen.rng.randint(1, 254)) for _ in range(4))


def _ipv6(gen: _Gen) -> str:
    """Eight hexadecimal groups, uncompressed."""
    return ":".join(f"{gen.rng.randrange(65536):x}" for _ in range(8))


def _uuid(gen: _Gen) -> str:
    """A version 4 UUID from the seeded source."""
    return str(uuid.UUID(int=gen.rng.getrandbits(128), version=4))


_FORMATS: dict[str, Callable[[_Gen], str]] = {
    "date": _date,
    "time": _time,
    "date-time": lambda g: f"{_date(g)}T{_time(g)}",
    "duration": _duration,
    "email": lambda g: f"{g.slug()}@example.com",
    "idn-email": lambda g: f"{g.slug()}@example.com",
    "hostname": lambda g: f"{g.slug()}.example.com",
    "idn-hostname": lambda g: f"{g.slug()}.example.com",
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "uuid": _uuid,
    "uri": lambda g: f"https://example.com/{g.slug()}",
    "iri": lambda g: f"https://example.com/{g.slug()}",
    "uri-reference": lambda g: f"/{g.slug()}",
    "iri-reference": lambda g: f"/{g.slug()}",
    "uri-template": lambda g: f"https://example.com/{{{g.slug()}}}",
    "json-pointer": lambda g: f"/{g.slug()}",
    "relative-json-pointer": lambda g: f"0/{g.slug()}",
    "regex": lambda g: g.slug(),
}


# --- numbers -------------------------------------------------------------------------------


def _bound(schema: dict[str, Any], *, upper: bool) -> tuple[float | int | None, bool]:
    """The tighter of the inclusive and exclusive bound on one side, and whether it is
    exclusive (draft 4's boolean exclusiveMinimum/Maximum included)."""
    inclusive = _number(schema.get("maximum" if upper else "minimum"))
    raw = schema.get("exclusiveMaximum" if upper else "exclusiveMinimum")
    if raw is True:
        return inclusive, inclusive is not None
    exclusive = _number(raw)
    if exclusive is None:
        return inclusive, False
    if inclusive is None or (exclusive <= inclusive if upper else exclusive >= inclusive):
        return exclusive, True
    return inclusive, False


def _is_multiple(value: float | int, step: float | int) -> bool:
    """What jsonschema checks: an exact remainder for integers, a whole quotient for floats."""
    if isinstance(step, float) or isinstance(value, float):
        quotient = value / step
        return math.isfinite(quotient) and quotient == int(quotient)
    return value % step == 0


def _inside(value: float | int, lo: Any, lo_x: bool, hi: Any, hi_x: bool) -> bool:
    """Whether a number lies within the bounds (exclusive ones strictly)."""
    above = lo is None or (value > lo if lo_x else value >= lo)
    below = hi is None or (value < hi if hi_x else value <= hi)
    return above and below


def _open_ends(lo: Any, hi: Any) -> tuple[float | int, float | int]:
    """Bounds for drawing: a window of 100 beside a lone bound, 0-100 without any."""
    if lo is None and hi is None:
        return 0, 100
    if lo is None:
        return hi - 100, hi
    return lo, lo + 100 if hi is None else hi


def _number_value(rng: random.Random, schema: dict[str, Any], *, integer: bool) -> int | float:
    """A number inside the bounds, a multiple of multipleOf; an integer for integer."""
    lo, lo_x = _bound(schema, upper=False)
    hi, hi_x = _bound(schema, upper=True)
    if lo is not None and hi is not None and (lo > hi or (lo == hi and (lo_x or hi_x))):
        raise SchemaError(f"no number lies between {lo} and {hi}")
    step = _number(schema.get("multipleOf"))
    if integer or (step is not None and step > 0):
        return _multiple(
            rng, step if step is not None and step > 0 else 1, integer, (lo, lo_x, hi, hi_x)
        )
    a, b = _open_ends(lo, hi)
    for value in (round(rng.uniform(a, b), 2), rng.uniform(a, b), a / 2 + b / 2):
        if _inside(value, lo, lo_x, hi, hi_x):
            return value
    return a / 2 + b / 2


def _multiple(
    rng: random.Random, step: float | int, integer: bool, bounds: tuple[Any, bool, Any, bool]
) -> int | float:
    """k * step inside the bounds; for integers a step that keeps k * step whole."""
    lo, lo_x, hi, hi_x = bounds
    unit: float | int = step
    if integer and not float(step).is_integer():
        unit = fractions.Fraction(step).limit_denominator(10**6).numerator  # lcm(step, 1)
    elif integer or isinstance(step, int):
        unit = int(step)
    a, b = _open_ends(lo, hi)
    k_lo, k_hi = math.ceil(a / unit), math.floor(b / unit)
    k_lo += 1 if lo_x and k_lo * unit <= lo else 0
    k_hi -= 1 if hi_x and k_hi * unit >= hi else 0
    if k_lo > k_hi:
        raise SchemaError(f"no multiple of {step} lies between {lo} and {hi}")
    value: int | float = k_lo * unit
    for _ in range(20):
        k = rng.randint(k_lo, k_hi)
        for value in (k * unit, round(k * unit, 12)):
            if _inside(value, lo, lo_x, hi, hi_x) and _is_multiple(value, step):
                return int(value) if integer else value
    return int(value) if integer else value  # float rounding defeated every try: best effort


# --- patterns ------------------------------------------------------------------------------

_Node = tuple[Any, ...]
_DIGIT = ((48, 57),)
_WORDCH = ((48, 57), (65, 90), (95, 95), (97, 122))
_SPACE = ((32, 32), (9, 9), (10, 10))
_POOL = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.,:;!?@#éßж中"
_QUANTIFIER = re.compile(r"\{(\d+)(,(\d*))?\}")
_FLAGS = re.compile(r"\?[aiLmsux-]+(\)|:)")
_NAMED = re.compile(r"\?P?<(?![=!])")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}
_CLASSES = {"d": _DIGIT, "w": _WORDCH, "s": _SPACE}
_MAX_REPEAT = 1000


class _Unsupported(Exception):
    """A regex beyond the generator's subset."""


class _RegexParser:
    """A recursive-descent parser of the regex subset into tuples:
    ("lit", c), ("set", ranges, negated), ("seq", nodes), ("alt", nodes),
    ("rep", node, lo, hi), ("anchor",)."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def parse(self) -> _Node:
        """The whole pattern's tree."""
        node = self.alternation()
        if self.i < len(self.p):
            raise _Unsupported("unbalanced ')'")
        return node

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def alternation(self) -> _Node:
        """Sequences separated by |."""
        options = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.sequence())
        return ("alt", options) if len(options) > 1 else options[0]

    def sequence(self) -> _Node:
        """Quantified atoms up to a | or )."""
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.quantified(self.atom()))
        return ("seq", items)

    def quantified(self, atom: _Node) -> _Node:
        """The atom with the quantifier that follows it, if any."""
        c = self.peek()
        bounds = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(c)
        if bounds is not None:
            self.i += 1
        elif c == "{" and (m := _QUANTIFIER.match(self.p, self.i)):
            low = int(m.group(1))
            high = low if not m.group(2) else int(m.group(3)) if m.group(3) else None
            bounds, self.i = (low, high), m.end()
        else:
            return atom
        if bounds[0] > _MAX_REPEAT or (bounds[1] is not None and bounds[1] < bounds[0]):
            raise _Unsupported("repetition too large or reversed")
        if self.peek() in ("?", "+"):
            self.i += 1  # lazy and possessive forms match the same strings
        return ("rep", atom, *bounds)

    def atom(self) -> _Node:
        """A literal, class, group, dot, anchor or escape."""
        c = self.p[self.i]
        self.i += 1
        if c == "(":
            return self.group()
        if c == "[":
            return self.charset()
        if c == ".":
            return ("set", ((10, 10),), True)
        if c in "^$":
            return ("anchor",)
        if c == "\\":
            return self.escape(in_class=False)
        if c in "*+?":
            raise _Unsupported("nothing to repeat")
        return ("lit", c)

    def group(self) -> _Node:
        """A group's content, after its ( (named, non-capturing or with flags)."""
        if self.p.startswith("?:", self.i):
            self.i += 2
        elif _NAMED.match(self.p, self.i):
            end = self.p.find(">", self.i)
            if end < 0:
                raise _Unsupported("unterminated group name")
            self.i = end + 1
        elif self.peek() == "?":
            flags = _FLAGS.match(self.p, self.i)
            if flags is None:
                raise _Unsupported("lookaround or other extension")
            self.i = flags.end()
            if flags.group(1) == ")":
                return ("seq", [])
        node = self.alternation()
        if self.peek() != ")":
            raise _Unsupported("missing ')'")
        self.i += 1
        return node

    def escape(self, *, in_class: bool) -> _Node:
        """The escape after a backslash."""
        c = self.peek()
        self.i += 1
        if c == "":
            raise _Unsupported("trailing backslash")
        if c.lower() in _CLASSES:
            return ("set", _CLASSES[c.lower()], c.isupper())
        if c in _ESCAPES:
            return ("lit", _ESCAPES[c])
        if c == "b" and in_class:
            return ("lit", "\b")
        if c in "bBAZ":
            return ("anchor",)
        if c in "xu":
            size = 2 if c == "x" else 4
            digits = self.p[self.i : self.i + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise _Unsupported("bad hex escape")
            self.i += size
            return ("lit", chr(int(digits, 16)))
        if c.isalnum():
            raise _Unsupported(f"escape \\{c}")  # backreferences, \p{...} and the like
        return ("lit", c)

    def charset(self) -> _Node:
        """A [...] class, after its [."""
        negated = self.peek() == "^"
        self.i += negated
        ranges: list[tuple[int, int]] = []
        first = True
        while first or self.peek() != "]":
            if self.peek() == "":
                raise _Unsupported("unterminated class")
            first = False
            ranges.extend(self.class_item())
        self.i += 1
        return ("set", tuple(ranges), negated)

    def class_item(self) -> list[tuple[int, int]]:
        """One character, range or shorthand inside a class."""
        start = self.class_atom()
        if isinstance(start, tuple):
            return list(start)
        if self.peek() == "-" and self.p[self.i + 1 : self.i + 2] not in ("]", ""):
            self.i += 1
            end = self.class_atom()
            if isinstance(end, tuple) or ord(end) < ord(start):
                raise _Unsupported("bad range")
            return [(ord(start), ord(end))]
        return [(ord(start), ord(start))]

    def class_atom(self) -> str | tuple[tuple[int, int], ...]:
        """One character of a class, or the ranges of \\d \\w \\s inside it."""
        c = self.p[self.i]
        self.i += 1
        if c != "\\":
            return c
        node = self.escape(in_class=True)
        if node[0] == "set" and not node[2]:
            return tuple(node[1])
        if node[0] != "lit":
            raise _Unsupported("negated class or anchor inside a class")
        return str(node[1])


def _char(rng: random.Random, ranges: tuple[tuple[int, int], ...], negated: bool) -> str:
    """A character in the ranges, or (negated) a plain one outside them."""
    if negated:
        pool = [c for c in _POOL if not any(lo <= ord(c) <= hi for lo, hi in ranges)]
        if not pool:
            raise _Unsupported("a class that excludes every plain character")
        return rng.choice(pool)
    if not ranges:
        raise _Unsupported("an empty class")
    lo, hi = rng.choice(ranges)
    code = rng.randint(lo, hi)
    return chr(code) if not 0xD800 <= code <= 0xDFFF else chr(lo)  # no lone surrogates


def _emit(node: _Node, rng: random.Random, stretch: int, budget: list[int]) -> str:
    """A string of the node's language; open repetitions add up to `stretch` times; at
    most `budget` characters in all."""
    kind = node[0]
    if kind == "lit":
        text = str(node[1])
    elif kind == "set":
        text = _char(rng, node[1], node[2])
    elif kind == "seq":
        text = "".join(_emit(n, rng, stretch, budget) for n in node[1])
    elif kind == "alt":
        text = _emit(rng.choice(node[1]), rng, stretch, budget)
    elif kind == "rep":
        lo, hi = node[2], node[3]
        count = rng.randint(lo, min(hi, lo + stretch) if hi is not None else lo + stretch)
        text = "".join(_emit(node[1], rng, stretch, budget) for _ in range(count))
    else:
        text = ""
    budget[0] -= len(text)
    if budget[0] < 0:
        raise _Unsupported("the match would be too long")
    return text


# --- OpenAI strict mode --------------------------------------------------------------------


def strict_problem(name: str, schema: Any) -> str | None:
    """OpenAI's refusal of a strict json_schema, worded as OpenAI words it; None if accepted."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind != "object":
        problem: str | None = (
            f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{kind}\"'."
        )
    else:
        check = _StrictCheck(schema)
        problem = check.walk(schema, (), 0) or check.totals()
    return None if problem is None else f"Invalid schema for response_format '{name}': {problem}"


class _StrictCheck:
    """One walk over a strict schema: the first problem found, and the property count."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.properties = 0

    def walk(self, node: Any, path: tuple[str, ...], outer: int) -> str | None:
        """The first problem in `node` or below it; `outer` counts the objects above."""
        if not isinstance(node, dict):
            return None
        is_object = "object" in (_declared_types(node) or ()) or (
            "type" not in node and "properties" in node
        )
        level = outer + is_object
        if level > _STRICT_NESTING or len(path) > 200:
            return f"{level} levels of nesting exceeds limit of {_STRICT_NESTING}."
        problem = self.own(node, path) or (self.object(node, path) if is_object else None)
        if problem:
            return problem
        for child_path, child in _strict_children(node, path):
            problem = self.walk(child, child_path, level)
            if problem:
                return problem
        return None

    def own(self, node: dict[str, Any], path: tuple[str, ...]) -> str | None:
        """A dangling $ref, or a subschema without a type."""
        ref = node.get("$ref")
        if isinstance(ref, str) and _resolve(self.root, ref) is _MISSING:
            return (
                f"In context={path!r}, reference to component '{ref}' "
                "which was not found in the schema."
            )
        if not any(k in node for k in ("type", "$ref", "anyOf", "enum", "const")):
            return f"In context={path!r}, schema must have a 'type' key."
        return None

    def object(self, node: dict[str, Any], path: tuple[str, ...]) -> str | None:
        """additionalProperties must be false and required must list every property."""
        props = node.get("properties")
        props = props if isinstance(props, dict) else {}
        self.properties += len(props)
        if node.get("additionalProperties") is not False:
            return (
                f"In context={path!r}, 'additionalProperties' is required to be supplied "
                "and to be false."
            )
        required = node.get("required")
        if required is None and not props:
            return None
        stem = (
            f"In context={path!r}, 'required' is required to be supplied and to be an array "
            "including every key in properties."
        )
        if not isinstance(required, list):
            return stem
        listed = {k for k in required if isinstance(k, str)}
        missing = [k for k in props if k not in listed]
        if missing:
            return f"{stem} Missing '{missing[0]}'."
        extra = [k for k in required if k not in props]
        return f"{stem} Extra required key '{extra[0]}' supplied." if extra else None

    def totals(self) -> str | None:
        """The limit on properties in the whole schema."""
        if self.properties > _STRICT_PROPERTIES:
            return f"{self.properties} properties exceed the limit of {_STRICT_PROPERTIES}."
        return None


def _strict_children(
    node: dict[str, Any], path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """The subschemas OpenAI checks: properties, items, anyOf, $defs and definitions."""
    for key in ("properties", "$defs", "definitions"):
        members = node.get(key)
        if isinstance(members, dict):
            yield from (((*path, key, str(k)), v) for k, v in members.items())
    items = node.get("items")
    if isinstance(items, dict):
        yield (*path, "items"), items
    elif isinstance(items, list):
        yield from (((*path, "items", str(i)), v) for i, v in enumerate(items))
    branches = node.get("anyOf")
    if isinstance(branches, list):
        yield from (((*path, "anyOf", str(i)), v) for i, v in enumerate(branches))
