"""Codecs for the x402 headers: base64 of UTF-8 JSON, v2 names and v1 aliases.

Decoding is strict about size, encoding and shape and lenient about base64 flavour: standard or
URL-safe alphabet, with or without padding, since clients in the wild send all four.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from verifier.errors import InvalidProof
from verifier.models import MAX_HEADER_BYTES, Failure, PaymentPayload, PaymentRequired, Receipt

PAYMENT_REQUIRED = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE = "PAYMENT-RESPONSE"
X_PAYMENT = "X-PAYMENT"
X_PAYMENT_RESPONSE = "X-PAYMENT-RESPONSE"

# The deepest a header's JSON may nest (a proof needs 4: payload, accepted, extra, a value).
MAX_JSON_DEPTH = 16

M = TypeVar("M", bound=BaseModel)


def encode_json(obj: BaseModel) -> str:
    """base64(JSON) of a model with its wire (camelCase) names, ``None`` fields left out."""
    raw = obj.model_dump_json(by_alias=True, exclude_none=True).encode()
    return base64.b64encode(raw).decode("ascii")


def decode_json(value: str | bytes) -> Any:
    """Decode a base64-JSON header value into plain JSON data, or raise ``InvalidProof``."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidProof("header is not ASCII") from exc
    value = value.strip()
    if not value:
        raise InvalidProof("header is empty")
    if len(value) > MAX_HEADER_BYTES:
        raise InvalidProof(f"header is larger than {MAX_HEADER_BYTES} bytes")
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidProof("header is not valid base64") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson also refuses numbers beyond a double (integers beyond 64 bits become floats)
        raise InvalidProof("header is not valid UTF-8 JSON") from exc
    _check_depth(data)
    return data


def _check_depth(data: Any) -> None:
    """Refuse JSON nested deeper than ``MAX_JSON_DEPTH`` (``{}`` is 1 deep): unknown fields are
    kept, queued and stored, so their shape is bounded here, before anything else walks them."""
    level = [data] if isinstance(data, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise InvalidProof(f"header JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        level = [
            item
            for value in level
            for item in (value.values() if isinstance(value, dict) else value)
            if isinstance(item, dict | list)
        ]


def _decode_model(value: str | bytes, model: type[M]) -> M:
    data = decode_json(value)
    if not isinstance(data, dict):
        raise InvalidProof(f"{model.__name__} must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise InvalidProof(f"{model.__name__}.{where}: {first['msg']}") from exc


def decode_payment_payload(value: str | bytes) -> PaymentPayload:
    return _decode_model(value, PaymentPayload)


def decode_payment_required(value: str | bytes) -> PaymentRequired:
    return _decode_model(value, PaymentRequired)


def decode_payment_response(value: str | bytes) -> Receipt | Failure:
    data = decode_json(value)
    if not isinstance(data, dict):
        raise InvalidProof("payment response must be a JSON object")
    model: type[Receipt] | type[Failure] = Receipt if data.get("success") is True else Failure
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidProof(f"payment response: {exc.errors()[0]['msg']}") from exc


def proof_header(headers: Mapping[str, str]) -> str | None:
    """The proof from request headers: ``PAYMENT-SIGNATURE``, else the v1 ``X-PAYMENT``."""
    lower = {k.lower(): v for k, v in headers.items()}
    return lower.get(PAYMENT_SIGNATURE.lower()) or lower.get(X_PAYMENT.lower())


def response_headers(outcome: Receipt | Failure) -> dict[str, str]:
    """``PAYMENT-RESPONSE`` and its v1 alias for a receipt or a failure."""
    value = encode_json(outcome)
    return {PAYMENT_RESPONSE: value, X_PAYMENT_RESPONSE: value}
