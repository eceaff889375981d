"""The emulator's Structured Outputs: a valid, deterministic instance of any JSON Schema, and
OpenAI's strict-mode refusals worded as OpenAI words them."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.tools.emulator.schemas import SchemaError, instance, strict_problem

Validator = jsonschema.Draft202012Validator
TEXT = "Hello, my payslip for March is wrong and I am annoyed about it."


def errors(schema: Any, value: Any) -> list[str]:
    """Every complaint jsonschema (formats checked) has about the value."""
    validator = Validator(schema, format_checker=Validator.FORMAT_CHECKER)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]


def valid(schema: Any, text: str = TEXT) -> Any:
    """An instance, asserted valid and the same on a second call."""
    before = copy.deepcopy(schema)
    value = instance(schema, text)
    assert errors(schema, value) == [], value
    assert instance(schema, text) == value, "deterministic"
    assert schema == before, "the schema is left as it was"
    return value


def strict_object(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


# --- hypothesis: random strict-mode schemas ------------------------------------------------

FORMATS = ["date-time", "date", "time", "email", "ipv4", "ipv6", "uuid", "hostname", "uri"]
PATTERNS = [r"^[A-Z]{3}-\d{4}$", r"\w+@\w+\.com", r"^(yes|no|maybe)$", r"^\d{2,4}[a-f]?$"]
NAMES = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True)


@st.composite
def integers(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(-1000, 1000))
    schema: dict[str, Any] = {"type": "integer", "minimum": low}
    schema["maximum"] = low + draw(st.integers(0, 500))
    if draw(st.booleans()):
        schema["multipleOf"] = draw(st.integers(1, 5))
        schema["maximum"] += 10  # room for a multiple
    return schema


@st.composite
def numbers(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.floats(-1e6, 1e6, allow_nan=False))
    schema = {"type": "number", "exclusiveMinimum": low}
    schema["exclusiveMaximum"] = low + draw(st.floats(0.5, 1e4))
    if draw(st.booleans()):
        schema["multipleOf"] = draw(st.sampled_from([0.5, 0.25, 0.1, 2, 0.01]))
        schema["exclusiveMaximum"] += 10
    return schema


LEAVES = st.one_of(
    st.just({"type": "string"}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.just({"type": ["string", "null"]}),
    st.sampled_from(FORMATS).map(lambda f: {"type": "string", "format": f}),
    st.sampled_from(PATTERNS).map(lambda p: {"type": "string", "pattern": p}),
    st.lists(st.text(max_size=6), min_size=1, max_size=4, unique=True).map(
        lambda values: {"type": "string", "enum": values}
    ),
    st.tuples(st.integers(0, 5), st.integers(0, 20)).map(
        lambda t: {"type": "string", "minLength": t[0], "maxLength": t[0] + t[1]}
    ),
    integers(),
    numbers(),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    objects = st.dictionaries(NAMES, children, max_size=4).map(strict_object)
    arrays = st.tuples(children, st.integers(0, 2), st.integers(0, 3)).map(
        lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]}
    )
    nullable = children.map(lambda s: {"anyOf": [s, {"type": "null"}]})
    return st.one_of(objects, arrays, nullable)


TREES = st.recursive(LEAVES, containers, max_leaves=10)


@st.composite
def strict_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A root object with its own fields, a $defs leaf and a recursive $defs node."""
    node = strict_object(
        {
            "label": draw(LEAVES),
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
            "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
        }
    )
    fields = draw(st.dictionaries(NAMES, TREES, max_size=4))
    fields |= {"tree": {"$ref": "#/$defs/node"}, "leaf": {"$ref": "#/$defs/leaf"}}
    return strict_object(fields, **{"$defs": {"node": node, "leaf": draw(LEAVES)}})


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(strict_schemas(), st.text(max_size=60))
def test_any_strict_schema_gets_a_valid_deterministic_instance_for_any_text(
    schema: dict[str, Any], text: str
) -> None:
    valid(schema, text)


# --- instances ---------------------------------------------------------------------------

ANALYSIS = strict_object(
    {
        "summary": {"type": "string"},
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "questions": {"type": "array", "items": {"type": "string"}},
        "escalated": {"type": "boolean"},
    }
)


def test_an_instance_is_the_same_for_the_same_input_and_varies_with_the_text() -> None:
    first = valid(ANALYSIS, TEXT)
    assert instance(copy.deepcopy(ANALYSIS), TEXT) == first, "an equal schema, the same value"
    others = [valid(ANALYSIS, f"{TEXT} ({n})") for n in range(5)]
    assert any(o != first for o in others)
    assert len({o["summary"] for o in others}) > 1


def test_strings_are_words_of_the_text_or_a_filler_without_words() -> None:
    words = set(re.findall(r"\w+", TEXT))
    summary = valid(ANALYSIS)["summary"]
    assert summary
    assert set(summary.split()) <= words
    assert valid(ANALYSIS, "   ...  ")["summary"].split()[0].isalpha()


def test_every_required_key_appears_and_no_key_beyond_the_properties() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {}},
        "required": ["a"],
    }
    seen: set[str] = set()
    for n in range(30):
        value = valid(schema, f"text {n}")
        assert "a" in value
        assert set(value) <= {"a", "b", "c"}
        seen |= set(value)
    assert seen == {"a", "b", "c"}, "optional keys come and go"


def test_a_recursive_schema_terminates_with_a_valid_instance() -> None:
    linked = strict_object(
        {"v": {"type": "string"}, "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}
    )
    tree = {
        "$ref": "#/definitions/node",
        "definitions": {
            "node": strict_object(
                {
                    "name": {"type": "string"},
                    "kids": {"type": "array", "items": {"$ref": "#/definitions/node"}},
                }
            )
        },
    }
    nullable = {
        "$defs": {
            "n": {
                "type": ["object", "null"],
                "properties": {"n": {"$ref": "#/$defs/n"}},
                "required": ["n"],
            }
        },
        "$ref": "#/$defs/n",
    }
    for schema in (linked, tree, nullable):
        for n in range(20):
            valid(schema, f"text {n}")


def test_a_recursion_that_cannot_end_is_refused() -> None:
    endless = {"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]}
    with pytest.raises(SchemaError, match="never ends"):
        instance(endless, TEXT)


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[A-Z]{3}-\d{4}$",
        r"^@[a-zA-Z0-9_]+$",
        r"\d{3}",
        r"^(foo|ba[rz])+$",
        r"^(?:\+31|0)6\d{8}$",
        r"^[^\s@]+@[^\s@]+\.[a-z]{2,}$",
        r"^\w{2,5}\s\w?$",
        r"^v\d+\.\d+(\.\d+)?(-(alpha|beta))?$",
        r"^(?P<year>\d{4})-(?P<m>0[1-9]|1[0-2])$",
        r"^[\u00e0-\u00ff]{2}.x*$",
        r"colou?r",
        r"^a{2,}b{0,3}[.]$",
        r"[]a-]+",
        r"(?i)^abc$",
    ],
)
def test_a_pattern_is_honoured(pattern: str) -> None:
    for n in range(5):
        value = valid({"type": "string", "pattern": pattern}, f"{TEXT} {n}")
        assert re.search(pattern, value)


def test_a_pattern_meets_the_length_limits_too() -> None:
    value = valid({"type": "string", "pattern": "^[a-z]+$", "minLength": 40, "maxLength": 45})
    assert 40 <= len(value) <= 45
    assert len(valid({"type": "string", "pattern": "x", "minLength": 30})) >= 30


def test_a_pattern_beyond_the_subset_still_gives_a_string() -> None:
    assert re.search(r"^(?=.*\d)\w+$", valid({"type": "string", "pattern": r"^(?=.*\d)\w+$"}))
    assert isinstance(instance({"type": "string", "pattern": r"^\p{L}+$"}, TEXT), str)
    assert isinstance(instance({"type": "string", "pattern": r"(a)\1"}, TEXT), str)


@pytest.mark.parametrize(
    ("fmt", "shape"),
    [
        ("date-time", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
        ("date", r"\d{4}-\d\d-\d\d"),
        ("time", r"\d\d:\d\d:\d\dZ"),
        ("duration", r"P\d+DT\d+H\d+M"),
        ("email", r"[a-z0-9]+@example\.com"),
        ("hostname", r"[a-z0-9]+\.example\.com"),
        ("ipv4", r"(\d{1,3}\.){3}\d{1,3}"),
        ("ipv6", r"([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}"),
        ("uuid", r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
        ("uri", r"https://example\.com/[a-z0-9]+"),
    ],
)
def test_a_string_format_has_its_shape(fmt: str, shape: str) -> None:
    for text in (TEXT, "", "Grüße 東京"):
        assert re.fullmatch(shape, valid({"type": "string", "format": fmt}, text))


def test_lengths_are_honoured() -> None:
    assert len(valid({"type": "string", "minLength": 500})) >= 500
    assert len(valid({"type": "string", "maxLength": 3})) <= 3
    assert len(valid({"type": "string", "minLength": 7, "maxLength": 7}, "a")) == 7


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 5, "maximum": 5},
        {"type": "integer", "exclusiveMinimum": 4, "exclusiveMaximum": 6},
        {"type": "integer", "minimum": -1e12, "multipleOf": 7},
        {"type": "integer", "multipleOf": 0.5, "minimum": 1, "maximum": 2},
        {"type": "number", "minimum": 0.001, "maximum": 0.002},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.1},
        {"type": "number", "maximum": -1e300},
        {"type": "number", "multipleOf": 0.01, "minimum": 10},
        {"type": "number", "minimum": 3, "exclusiveMinimum": True, "maximum": 4},
    ],
)
def test_numeric_bounds_and_multiples_are_honoured(schema: dict[str, Any]) -> None:
    for n in range(10):
        valid(schema, f"text {n}")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": ["integer", "string", "null"]},
        {"enum": [1, "two", None, [3]]},
        {"type": "string", "enum": [1, "two", None]},
        {"const": {"a": [1, 2]}},
        {"anyOf": [{"type": "integer", "minimum": 10}, {"type": "string", "format": "date"}]},
        {"oneOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "null"}}]},
        {"type": "string", "anyOf": [{"type": "integer"}, {"maxLength": 4}]},
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"a": {"minimum": 50}, "b": {"type": "string"}}, "required": ["b"]},
            ]
        },
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
        {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
        {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "uniqueItems": True},
        {"type": "array", "contains": {"const": "x"}},
        {"type": "object", "minProperties": 2, "properties": {"a": {"type": "null"}}},
        {"type": "object", "required": ["x-1"], "patternProperties": {"^x-": {"type": "integer"}}},
        {"minimum": 3, "maximum": 9},
        {"properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"items": {"type": "integer"}, "minItems": 2},
    ],
)
def test_keywords_at_any_type_are_honoured(schema: dict[str, Any]) -> None:
    for n in range(10):
        valid(schema, f"text {n}")


def test_refs_follow_json_pointers_with_escapes() -> None:
    schema = {
        "$defs": {
            "a/b": {"type": "integer", "minimum": 7},
            "c~d": {"const": "tilde"},
            "e f": {"type": "null"},
        },
        "type": "array",
        "prefixItems": [
            {"$ref": "#/$defs/a~1b"},
            {"$ref": "#/$defs/c~0d"},
            {"$ref": "#/$defs/e%20f"},
        ],
        "minItems": 3,
        "maxItems": 3,
    }
    value = valid(schema)
    assert value[0] >= 7
    assert value[1:] == ["tilde", None]


def test_true_and_empty_schemas_give_the_texts_first_word() -> None:
    assert instance(True, TEXT) == "Hello"  # type: ignore[arg-type]
    assert instance({}, TEXT) == "Hello"
    assert instance({"type": "object", "properties": {"x": True}, "required": ["x"]}, TEXT) == {
        "x": "Hello"
    }


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "wat", "x-unknown": 1, "description": 5},
        {"type": [], "properties": []},
        {"type": "object", "properties": {"a": 7}, "required": "a"},
        {"type": "object", "properties": {"a": None}, "required": ["a", 3]},
        {"$ref": "https://example.com/elsewhere.json"},
        {"$ref": "#/$defs/missing"},
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
        {"type": "array", "items": [{"type": "integer"}], "minItems": "2"},
        {"type": "string", "format": "no-such-format", "pattern": 5},
        {"type": "number", "minimum": "3", "multipleOf": -2},
    ],
)
def test_odd_schemas_do_not_raise(schema: dict[str, Any]) -> None:
    instance(schema, TEXT)
    instance(schema, "")


@pytest.mark.parametrize(
    "schema",
    [
        False,
        {"enum": []},
        {"type": "integer", "enum": ["a"]},
        {"type": "array", "minItems": 3, "maxItems": 2},
        {"type": "integer", "minimum": 3, "maximum": 2},
        {"type": "number", "exclusiveMinimum": 1, "maximum": 1},
        {"type": "integer", "minimum": 0.2, "maximum": 0.8},
        {"type": "integer", "minimum": 1, "maximum": 4, "multipleOf": 5},
        {"type": "string", "minLength": 5, "maxLength": 4},
        {"type": "object", "required": ["x"], "additionalProperties": False},
        {"type": "object", "properties": {"x": False}, "required": ["x"]},
        {"allOf": [{"type": "string"}, {"type": "integer"}]},
        {"anyOf": [False, {"type": "string", "minLength": 2, "maxLength": 1}]},
    ],
)
def test_an_unsatisfiable_schema_raises_schema_error(schema: Any) -> None:
    with pytest.raises(SchemaError):
        instance(schema, TEXT)


def test_a_huge_min_items_is_refused_not_built() -> None:
    with pytest.raises(SchemaError, match="too large"):
        instance({"type": "array", "minItems": 10**9}, TEXT)
    with pytest.raises(SchemaError, match="too large"):
        instance({"type": "string", "minLength": 10**9}, TEXT)
    nested = {"type": "array", "minItems": 100, "items": {"type": "array", "minItems": 200}}
    with pytest.raises(SchemaError, match="too large"):
        instance(nested, TEXT)


def test_a_wide_schema_stays_small_but_valid() -> None:
    wide = strict_object(
        {f"p{i}": {"type": "array", "items": {"type": "string"}} for i in range(3000)}
    )
    value = valid(wide)
    assert sum(len(v) for v in value.values()) < 6000


# --- strict mode ---------------------------------------------------------------------------


def test_strict_mode_accepts_a_well_formed_schema() -> None:
    schema = strict_object(
        {
            "a": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
            "b": {"type": "array", "items": strict_object({"c": {"type": "string"}})},
        },
        **{
            "$defs": {"node": strict_object({"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}})}
        },
    )
    assert strict_problem("analysis", schema) is None


def test_strict_mode_refuses_an_object_without_additional_properties_false() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert strict_problem("x", schema) == (
        "Invalid schema for response_format 'x': In context=(), 'additionalProperties' "
        "is required to be supplied and to be false."
    )


def test_strict_mode_names_the_missing_required_key_and_its_context() -> None:
    address = strict_object({"street": {"type": "string"}, "zip": {"type": "string"}})
    address["required"] = ["street"]
    assert strict_problem("person", strict_object({"address": address})) == (
        "Invalid schema for response_format 'person': In context=('properties', 'address'), "
        "'required' is required to be supplied and to be an array including every key in "
        "properties. Missing 'zip'."
    )


def test_strict_mode_names_an_extra_required_key() -> None:
    schema = strict_object({"a": {"type": "string"}})
    schema["required"] = ["a", "b"]
    assert strict_problem("x", schema) == (
        "Invalid schema for response_format 'x': In context=(), 'required' is required to be "
        "supplied and to be an array including every key in properties. Extra required key "
        "'b' supplied."
    )


def test_strict_mode_checks_objects_in_items_any_of_and_defs() -> None:
    loose = {"type": "object", "properties": {}}
    cases = {
        "('properties', 'items', 'items')": strict_object(
            {"items": {"type": "array", "items": loose}}
        ),
        "('properties', 'a', 'anyOf', '0')": strict_object(
            {"a": {"anyOf": [loose, {"type": "null"}]}}
        ),
        "('$defs', 'Node')": strict_object({}, **{"$defs": {"Node": loose}}),
    }
    for context, schema in cases.items():
        assert strict_problem("x", schema) == (
            f"Invalid schema for response_format 'x': In context={context}, "
            "'additionalProperties' is required to be supplied and to be false."
        )


def test_strict_mode_wants_an_object_at_the_top() -> None:
    array = {"type": "array", "items": {"type": "string"}}
    assert strict_problem("x", array) == (
        "Invalid schema for response_format 'x': schema must be a JSON Schema of "
        "'type: \"object\"', got 'type: \"array\"'."
    )
    assert strict_problem("x", {"anyOf": []}) == (
        "Invalid schema for response_format 'x': schema must be a JSON Schema of "
        "'type: \"object\"', got 'type: \"None\"'."
    )


def test_strict_mode_wants_a_type_on_every_subschema() -> None:
    assert strict_problem("x", strict_object({"a": {"description": "anything"}})) == (
        "Invalid schema for response_format 'x': In context=('properties', 'a'), "
        "schema must have a 'type' key."
    )


def test_strict_mode_refuses_nesting_deeper_than_ten_levels() -> None:
    def nested(levels: int) -> dict[str, Any]:
        schema = strict_object({"leaf": {"type": "string"}})
        for _ in range(levels - 1):
            schema = strict_object({"inner": schema})
        return schema

    assert strict_problem("x", nested(10)) is None
    assert strict_problem("x", nested(11)) == (
        "Invalid schema for response_format 'x': 11 levels of nesting exceeds limit of 10."
    )


def test_strict_mode_refuses_more_than_5000_properties() -> None:
    def wide(count: int) -> dict[str, Any]:
        return strict_object({f"p{i}": {"type": "string"} for i in range(count)})

    assert strict_problem("x", wide(5000)) is None
    assert strict_problem("x", wide(5001)) == (
        "Invalid schema for response_format 'x': 5001 properties exceed the limit of 5000."
    )


def test_strict_mode_refuses_an_unknown_ref() -> None:
    schema = strict_object({"a": {"$ref": "#/$defs/Missing"}}, **{"$defs": {}})
    assert strict_problem("x", schema) == (
        "Invalid schema for response_format 'x': In context=('properties', 'a'), reference to "
        "component '#/$defs/Missing' which was not found in the schema."
    )
