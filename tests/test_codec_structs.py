"""The public message classes as Python values: reprs, equality, copies, pickling, the dict and
JSON views, enums, null handling and the checks request classes run on construction."""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from lorax import codec, errors
from lorax import types as T
from lorax._message import UNSET

ROOT = Path(__file__).resolve().parent.parent
SEED = 15828326327212539139  # above 2**63, as LoRAX picks them

DETAILS_BODY = (
    b'{"generated_text":"Paris","details":{"finish_reason":"length","prompt_tokens":3,"generated_tokens":2,'
    b'"skipped_tokens":0,"seed":15828326327212539139,"prefill":[{"id":1,"text":"<s>","logprob":null}],'
    b'"tokens":[{"id":5,"text":"Par","logprob":-0.25,"special":false,"skipped":false},'
    b'{"id":6,"text":"is","logprob":null,"special":false,"skipped":false}]}}'
)


def response() -> Any:
    return codec.from_json(T.GenerateResponse, DETAILS_BODY)


# ---------------------------------------------------------------------------------------------
# Reprs


def test_repr_is_one_line_and_elides_long_lists() -> None:
    embedding = T.EmbedResponse(embeddings=[0.25] * 4096)
    text = repr(embedding)
    assert text == "EmbedResponse(embeddings=[0.25, 0.25, 0.25, 0.25, 0.25, 0.25, ... 4090 more])"
    assert "\n" not in text
    assert len(text) < 100


def test_repr_of_a_response_shows_fields_and_nested_messages() -> None:
    text = repr(response())
    assert "\n" not in text
    assert text.startswith("GenerateResponse(generated_text='Paris', details=Details(finish_reason='length', ")
    assert "seed=15828326327212539139" in text
    assert "PrefillToken(id=1, text='<s>', logprob=None)" in text


def test_repr_of_a_request_shows_only_what_was_set() -> None:
    request = T.GenerateRequest(inputs="hi", parameters=T.GenerateParameters(max_new_tokens=5, stop=["\n"]))
    assert (
        repr(request) == "GenerateRequest(inputs='hi', parameters=GenerateParameters(max_new_tokens=5, stop=['\\n']))"
    )
    assert repr(T.ResponseFormat(type="json_object")) == "ResponseFormat(type='json_object')"
    assert repr(T.ResponseFormat(type="json_object", schema=None)) == "ResponseFormat(type='json_object', schema=None)"


def test_repr_elides_long_strings_and_big_maps() -> None:
    text = repr(T.GenerateResponse(generated_text="x" * 5000))
    assert text == "GenerateResponse(generated_text=" + repr("x" * 200) + "...(5000 chars), details=None)"
    bias = repr(T.CompletionRequest(model="", prompt="", logit_bias={str(i): -1.0 for i in range(50)}))
    assert bias.endswith("logit_bias={'0': -1.0, '1': -1.0, '2': -1.0, '3': -1.0, '4': -1.0, '5': -1.0, ... 44 more})")


def test_repr_never_shows_an_api_token() -> None:
    request = T.GenerateRequest(inputs="x", parameters=T.GenerateParameters(api_token="hf_SECRET123"))
    assert "hf_SECRET123" not in repr(request)
    assert repr(request) == "GenerateRequest(inputs='x', parameters=GenerateParameters(api_token='<redacted>'))"
    chat = T.ChatCompletionRequest(model="", messages=[], api_token="hf_SECRET123")
    assert "hf_SECRET123" not in repr(chat)
    assert "hf_SECRET123" not in str(chat)


# ---------------------------------------------------------------------------------------------
# Equality, copies, pickling


def test_equality_is_by_value() -> None:
    a, b = response(), response()
    assert a == b
    assert a is not b
    b.details.tokens[1].logprob = 0.0
    assert a != b  # null and 0.0 differ
    assert T.Token(id=1) != T.AlternativeToken(id=1)  # same fields, different classes
    assert T.ResponseFormat(type="text") != T.ResponseFormat(type="text", schema=None)  # absent != null


def test_copy_copy_is_shallow_and_equal() -> None:
    original = response()
    shallow = copy.copy(original)
    assert shallow == original
    assert shallow is not original
    assert shallow.details is original.details
    deep = copy.deepcopy(original)
    assert deep == original
    assert deep.details is not original.details
    changed = msgspec.structs.replace(original, generated_text="Rome")
    assert changed.generated_text == "Rome"
    assert original.generated_text == "Paris"


@pytest.mark.parametrize(
    "message",
    [
        response(),
        T.GenerateRequest(
            inputs="x",
            parameters=T.GenerateParameters(
                seed=SEED,
                merged_adapters=T.MergedAdapters(ids=["a", "b"], weights=[0.5, 0.5], merge_strategy="ties"),
                response_format=T.ResponseFormat(type="json_object", schema={"type": "object"}),
            ),
        ),
        T.ResponseFormat(type="text"),
        T.ChatMessage(role="user", content=[T.ContentPart(type="text", text="a")]),
        T.EmbedResponse(embeddings=[math.nan, 1.0]),
    ],
    ids=lambda m: type(m).__name__,
)
def test_pickle_round_trips(message: Any) -> None:
    back = pickle.loads(pickle.dumps(message))
    assert type(back) is type(message)
    assert codec.to_json(back) == codec.to_json(message)
    if not isinstance(message, T.EmbedResponse):  # NaN != NaN
        assert back == message


def test_enums_pickle_and_stay_members() -> None:
    member = pickle.loads(pickle.dumps(T.FinishReason.Length))
    assert member is T.FinishReason.LENGTH
    assert pickle.loads(pickle.dumps(T.ResponseFormat(type="text"))).type is T.ResponseFormatType.TEXT
    assert T.ResponseFormat(type="text").schema is UNSET
    assert pickle.loads(pickle.dumps(T.ResponseFormat(type="text"))).schema is UNSET


# ---------------------------------------------------------------------------------------------
# The dict and JSON views


def test_to_dict_and_model_dump_are_plain_python() -> None:
    r = response()
    expected = {
        "generated_text": "Paris",
        "details": {
            "finish_reason": "length",
            "prompt_tokens": 3,
            "generated_tokens": 2,
            "skipped_tokens": 0,
            "seed": SEED,
            "prefill": [{"id": 1, "text": "<s>", "logprob": None}],
            "tokens": [
                {
                    "id": 5,
                    "text": "Par",
                    "logprob": -0.25,
                    "special": False,
                    "alternative_tokens": [],
                    "skipped": False,
                },
                {"id": 6, "text": "is", "logprob": None, "special": False, "alternative_tokens": [], "skipped": False},
            ],
            "best_of_sequences": [],
        },
    }
    assert r.to_dict() == expected
    assert r.model_dump() == expected
    assert r.dict() == expected


def test_enum_values_are_plain_strings_in_dicts() -> None:
    merged = T.MergedAdapters(ids=["a"], merge_strategy="ties")
    dumped = merged.to_dict()
    assert dumped == {
        "ids": ["a"],
        "weights": [],
        "merge_strategy": "ties",
        "density": None,
        "majority_sign_method": None,
    }
    assert type(dumped["merge_strategy"]) is str
    assert T.ResponseFormat(type="text").to_dict() == {"type": "text"}  # an absent schema is left out
    assert T.ResponseFormat(type="text", schema=None).to_dict() == {"type": "text", "schema": None}


def test_to_json_is_lorax_json() -> None:
    r = response()
    assert r.to_json() == DETAILS_BODY.decode()
    assert r.to_json() == codec.to_json(r).decode()
    request = T.GenerateRequest(inputs="hi", parameters=T.GenerateParameters(max_new_tokens=5, seed=SEED))
    assert request.to_json() == '{"inputs":"hi","parameters":{"max_new_tokens":5,"seed":15828326327212539139}}'
    assert T.GenerateResponse.from_json(r.to_json()) == r


def test_model_dump_json_and_json_are_the_dict_as_json() -> None:
    r = response()
    assert orjson.loads(r.model_dump_json()) == r.model_dump()
    assert r.json() == r.model_dump_json()
    assert "\n" not in r.model_dump_json()
    assert '"seed":15828326327212539139' in r.model_dump_json()  # exact, as a number
    assert '"alternative_tokens":[]' in r.model_dump_json()  # every field, unlike to_json()
    assert T.GenerateParameters(max_new_tokens=1).json().startswith('{"adapter_id":null,')


# ---------------------------------------------------------------------------------------------
# Enums and null handling


def test_finish_reason_spellings_are_one_value() -> None:
    assert T.FinishReason.Length == "length" == T.FinishReason.FINISH_REASON_LENGTH
    assert T.FinishReason.Length is T.FinishReason.FINISH_REASON_LENGTH is T.FinishReason.LENGTH
    assert T.FinishReason.EndOfSequenceToken == "eos_token"
    assert T.FinishReason.StopSequence == "stop_sequence"
    assert str(T.FinishReason.Length) == "length"
    assert f"{T.FinishReason.Length}" == "length"
    assert response().details.finish_reason == T.FinishReason.Length


def test_null_logprob_reads_none() -> None:
    d = response().details
    assert d.tokens[0].logprob == -0.25
    assert d.tokens[1].logprob is None
    assert d.prefill[0].logprob is None
    event = codec.from_json(T.StreamResponse, b'{"token":{"id":1,"text":"a","logprob":null,"special":false}}')
    assert event.token.logprob is None


def test_details_is_none_when_absent() -> None:
    assert codec.from_json(T.GenerateResponse, b'{"generated_text":"x"}').details is None
    assert codec.from_json(T.GenerateResponse, b'{"generated_text":"x","details":null}').details is None
    assert T.GenerateResponse().details is None
    event = codec.from_json(T.StreamResponse, b'{"token":{"id":1},"generated_text":null,"details":null}')
    assert event.details is None
    assert event.generated_text is None


def test_seed_none_for_null_and_exact_above_2_63() -> None:
    body = b'{"finish_reason":"length","prompt_tokens":1,"generated_tokens":1,"seed":%d}'
    assert codec.from_json(T.StreamDetails, body.replace(b"%d", b"null")).seed is None
    for seed in (2**63 + 1, SEED, 2**64 - 1):
        details = codec.from_json(T.StreamDetails, body % seed)
        assert details.seed == seed
        assert type(details.seed) is int
        assert codec.to_json(details) == body % seed
        assert T.StreamDetails.from_proto(details.to_proto()).seed == seed
    assert T.GenerateParameters(seed=2**64 - 1).to_json() == '{"seed":18446744073709551615}'


# ---------------------------------------------------------------------------------------------
# Request classes: construction and its checks


def test_merged_adapters_and_response_format_construct_from_spellings() -> None:
    merged = T.MergedAdapters(
        ids=["a", "b"], weights=[0.7, 0.3], merge_strategy="ties", density=0.5, majority_sign_method="frequency"
    )
    assert merged.merge_strategy is T.MergeStrategy.TIES
    assert merged.majority_sign_method is T.MajoritySignMethod.FREQUENCY
    assert merged.to_json() == (
        '{"ids":["a","b"],"weights":[0.7,0.3],"merge_strategy":"ties","density":0.5,"majority_sign_method":"frequency"}'
    )
    rf = T.ResponseFormat(type="json_object")
    assert rf.type is T.ResponseFormatType.JSON_OBJECT
    assert rf.to_json() == '{"type":"json_object"}'
    assert T.ResponseFormat(type="JsonObject").type is T.ResponseFormatType.JSON_OBJECT  # LoRAX's alias
    params = T.GenerateParameters(merged_adapters={"ids": ["a"], "merge_strategy": "dare_ties"})
    assert params.merged_adapters == T.MergedAdapters(ids=["a"], merge_strategy=T.MergeStrategy.DARE_TIES)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: T.GenerateParameters(max_new_tokens=-1), r"^max_new_tokens=-1 does not fit the field"),
        (lambda: T.GenerateParameters(max_new_tokens=2**32), r"^max_new_tokens=4294967296 does not fit the field"),
        (lambda: T.GenerateParameters(max_new_tokens=1.0), r"^max_new_tokens=1\.0 does not fit the field"),
        (lambda: T.GenerateParameters(max_new_tokens=True), r"^max_new_tokens=True does not fit the field"),
        (lambda: T.GenerateParameters(temperature=float("nan")), r"^temperature=nan is not a finite number"),
        (lambda: T.GenerateParameters(top_p=float("inf")), r"^top_p=inf is not a finite number"),
        (lambda: T.GenerateParameters(temperature="hot"), r"^temperature='hot' does not fit the field \(a number\)"),
        (lambda: T.GenerateParameters(seed=2**64), r"^seed=18446744073709551616 does not fit the field"),
        (lambda: T.GenerateParameters(seed=-1), r"^seed=-1 does not fit the field"),
        (lambda: T.MergedAdapters(ids=["a"], merge_strategy="bogus"), r"^merge_strategy='bogus' is not one of: "),
        (lambda: T.GenerateParameters(adapter_id="a\nb"), r"^adapter_id contains the control character '\\n'"),
        (lambda: T.GenerateParameters(adapter_source="hub\r"), r"^adapter_source contains the control character"),
        (lambda: T.EmbedParameters(adapter_id="a\x00"), r"^adapter_id contains the control character"),
        (lambda: T.GenerateParameters(stop="x"), r"^stop must be a list, not str"),
        (lambda: T.GenerateParameters(stop=["a", 1]), r"^stop\[1\] must be a string, not int"),
        (lambda: T.GenerateRequest(inputs=5), r"^inputs must be a string, not int"),
        (lambda: T.GenerateParameters(do_sample="yes"), r"^do_sample must be True or False, got 'yes'"),
        (lambda: T.GenerateParameters(merged_adapters={"ids": ["a"], "bogus": 1}), r"unknown keys \['bogus'\]"),
    ],
)
def test_request_validation_raises_invalid_request_error(build: Any, message: str) -> None:
    with pytest.raises(errors.InvalidRequestError, match=message) as info:
        build()
    assert isinstance(info.value, errors.ValidationError)
    assert info.value.status_code is None


def test_merge_strategy_error_lists_the_spellings() -> None:
    with pytest.raises(errors.InvalidRequestError) as info:
        T.MergedAdapters(ids=["a"], merge_strategy="bogus")
    assert str(info.value) == "merge_strategy='bogus' is not one of: dare_linear, dare_ties, linear, ties"


def test_valid_edges_are_not_refused() -> None:
    """Never stricter than LoRAX: top_p=1.0 and temperature=0 are valid."""
    params = T.GenerateParameters(top_p=1.0, temperature=0, max_new_tokens=0, seed=2**64 - 1, adapter_id="a\tb")
    assert params.temperature == 0.0
    assert type(params.temperature) is float
    assert params.to_json() == (
        '{"adapter_id":"a\\tb","temperature":0.0,"top_p":1.0,"max_new_tokens":0,"seed":18446744073709551615}'
    )
    assert T.ChatCompletionRequest(model="", messages=[], temperature=0, top_p=1.0).temperature == 0.0


def test_adapter_id_checks_remember_only_safe_strings() -> None:
    """The header check remembers strings that passed it; an unsafe one is refused every time."""
    from lorax import _params, _validate

    bad = "org/adapter\nx"
    for _ in range(2):
        with pytest.raises(errors.InvalidRequestError, match=r"^adapter_id contains the control character '\\n'"):
            T.GenerateParameters(adapter_id=bad)
        with pytest.raises(errors.InvalidRequestError, match=r"^adapter_source contains the control character"):
            T.EmbedParameters(adapter_source=bad)
        with pytest.raises(errors.InvalidRequestError, match=r"^adapter_id contains the control character"):
            _params.generate("x", adapter_id=bad)
    assert bad not in _validate.SAFE_HEADER_VALUES
    good = "org/adapter-remembered"
    assert T.GenerateParameters(adapter_id=good).adapter_id == good
    assert good in _validate.SAFE_HEADER_VALUES
    assert T.GenerateParameters(adapter_source=good).adapter_source == good

    class Text(str):
        pass

    # Equal to a remembered string, but not a plain str: still normalised to one.
    assert type(T.GenerateParameters(adapter_id=Text(good)).adapter_id) is str
    with pytest.raises(errors.InvalidRequestError, match=r"^adapter_id must be a string, not int"):
        T.GenerateParameters(adapter_id=5)
    long = "a" * 600  # checked, not remembered
    assert T.GenerateParameters(adapter_id=long).adapter_id == long
    assert long not in _validate.SAFE_HEADER_VALUES


def test_list_items_are_checked_in_every_request_list() -> None:
    with pytest.raises(errors.InvalidRequestError, match=r"^stop\[1\] must be a string, not int"):
        T.GenerateParameters(stop=["a", 1])
    with pytest.raises(errors.InvalidRequestError, match=r"^weights\[0\]=nan is not a finite number"):
        T.MergedAdapters(ids=["a"], weights=[math.nan])
    with pytest.raises(errors.InvalidRequestError, match=r"^inputs\[0\] must be a string, not bytes"):
        T.ClassifyBatchRequest(inputs=[b"x"])
    # Tuples and ints in a float list are normalised to what LoRAX is sent.
    merged = T.MergedAdapters(ids=("a", "b"), weights=[1, 0.5])
    assert merged.ids == ["a", "b"]
    assert type(merged.ids) is list
    assert [type(w) for w in merged.weights] == [float, float]


def test_nested_dicts_are_checked_too() -> None:
    with pytest.raises(errors.InvalidRequestError, match=r"^merge_strategy='bogus'"):
        T.GenerateRequest(inputs="x", parameters={"merged_adapters": {"ids": ["a"], "merge_strategy": "bogus"}})
    with pytest.raises(errors.InvalidRequestError, match=r"^temperature=nan"):
        T.GenerateRequest(inputs="x", parameters={"temperature": math.nan})


# ---------------------------------------------------------------------------------------------
# import lorax stays free of protobuf


def test_import_lorax_does_not_import_protobuf() -> None:
    code = (
        "import sys, lorax, lorax.types, lorax.codec\n"
        "loaded = sorted(m for m in sys.modules if m == 'google.protobuf' or m.startswith('google.protobuf.'))\n"
        "print(loaded)\n"
        "raise SystemExit(1 if loaded else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "[]"


def test_to_proto_refuses_what_binary_cannot_hold() -> None:
    """Assignment is not checked: an out-of-range value fails as a typed error, not a bare ValueError."""
    details = T.StreamDetails(seed=2**64 - 1)
    assert T.StreamDetails.from_proto(details.to_proto()).seed == 2**64 - 1
    details.seed = 2**64
    with pytest.raises(
        errors.InvalidRequestError, match=r"^StreamDetails cannot be written as protobuf: .*18446744073709551616"
    ):
        details.to_proto()
    token = T.Token(id=1)
    token.id = -1
    with pytest.raises(errors.InvalidRequestError, match=r"^Token cannot be written as protobuf"):
        token.to_proto()
