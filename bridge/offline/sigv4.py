"""Check SigV4 pre-signed URLs the way API Gateway checks an IAM-authorized ``$connect``.

A WebSocket client cannot set an ``Authorization`` header on the upgrade request, so
AWS clients sign the URL instead (``X-Amz-*`` query parameters, botocore's
``SigV4QueryAuth``). The local gateway must refuse exactly what AWS refuses, so it
rebuilds the canonical request from the bytes it received and lets botocore's own
signer compute the expected signature: any difference in how we canonicalize would
otherwise make the local cloud accept URLs that AWS rejects, or the reverse.

Only the signature, the credential scope and the time window are checked; there is
no IAM policy evaluation (the local cloud has one principal: the configured key).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
SIGNATURE_PARAM = "X-Amz-Signature"
#: Query parameters that belong to the signature, not to the application.
AUTH_PARAMS = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        SIGNATURE_PARAM,
    }
)
#: SigV4 caps pre-signed URLs at seven days.
MAX_EXPIRES = 7 * 24 * 3600
#: How far in the future a signing time may lie (clock skew), as AWS allows.
MAX_CLOCK_SKEW = timedelta(minutes=15)
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


class SignatureError(Exception):
    """The request is not signed, or not signed by the key we accept. ``str()`` says why."""


@dataclass(frozen=True)
class SignedCaller:
    """Who signed the request: what API Gateway puts into ``requestContext.identity``."""

    access_key: str
    session_token: str | None


@dataclass(frozen=True)
class _AuthParams:
    signature: str
    access_key: str
    scope_date: str
    scope_region: str
    scope_service: str
    scope_terminal: str
    amz_date: str
    signed_at: datetime
    expires: int
    signed_headers: tuple[str, ...]
    session_token: str | None


def verify_presigned(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    access_key: str,
    secret_key: str,
    region: str,
    service: str = "execute-api",
    now: datetime | None = None,
    payload_hash: str | None = None,
) -> SignedCaller:
    """Return the caller if the query-string signature is valid now, else raise SignatureError.

    ``raw_path`` and ``raw_query`` must be exactly as received (still percent-encoded):
    the canonical query string is built from the encoded pairs, so decoding and
    re-encoding could change the bytes the client signed. ``payload_hash`` is the
    canonical request's last line when the service fixes it (S3 presigns with
    ``UNSIGNED-PAYLOAD``); by default that of the empty body, as execute-api expects.
    """
    params = _auth_params(raw_query)
    _check_scope(params, access_key=access_key, region=region, service=service)
    _check_time(params, now or datetime.now(UTC))
    expected = _expected_signature(
        params,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=headers,
        credentials=Credentials(access_key, secret_key, params.session_token),
        region=region,
        service=service,
        payload_hash=payload_hash,
    )
    if not hmac.compare_digest(expected, params.signature):
        raise SignatureError("signature does not match")
    return SignedCaller(access_key=params.access_key, session_token=params.session_token)


def strip_auth_params(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop the ``X-Amz-*`` signing parameters so handlers see only the application's own."""
    return [(k, v) for k, v in pairs if k not in AUTH_PARAMS]


def _auth_params(raw_query: str) -> _AuthParams:
    """Read the signing parameters; each must appear exactly once."""
    values: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        if key in AUTH_PARAMS:
            values.setdefault(key, []).append(value)
    if SIGNATURE_PARAM not in values:
        raise SignatureError("missing authentication token (the URL is not signed)")
    for key, found in values.items():
        if len(found) > 1:
            raise SignatureError(f"{key} appears more than once")
    one = {k: v[0] for k, v in values.items()}
    missing = sorted(k for k in AUTH_PARAMS - {"X-Amz-Security-Token"} if k not in one)
    if missing:
        raise SignatureError(f"missing {', '.join(missing)}")
    if one["X-Amz-Algorithm"] != ALGORITHM:
        raise SignatureError(f"unsupported algorithm {one['X-Amz-Algorithm']!r}")
    scope = one["X-Amz-Credential"].split("/")
    if len(scope) != 5:
        raise SignatureError("malformed X-Amz-Credential")
    try:
        signed_at = datetime.strptime(one["X-Amz-Date"], _AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        expires = int(one["X-Amz-Expires"])
    except ValueError as exc:
        raise SignatureError("malformed X-Amz-Date or X-Amz-Expires") from exc
    return _AuthParams(
        signature=one[SIGNATURE_PARAM],
        access_key=scope[0],
        scope_date=scope[1],
        scope_region=scope[2],
        scope_service=scope[3],
        scope_terminal=scope[4],
        amz_date=one["X-Amz-Date"],
        signed_at=signed_at,
        expires=expires,
        signed_headers=tuple(h for h in one["X-Amz-SignedHeaders"].split(";") if h),
        session_token=one.get("X-Amz-Security-Token"),
    )


def _check_scope(params: _AuthParams, *, access_key: str, region: str, service: str) -> None:
    """The credential scope must name our key, the signing day, our region and service."""
    if params.access_key != access_key:
        raise SignatureError("unknown access key")
    if params.scope_date != params.amz_date[:8]:
        raise SignatureError("credential scope date does not match X-Amz-Date")
    if params.scope_region != region:
        raise SignatureError(f"credential scope is for region {params.scope_region!r}")
    if params.scope_service != service or params.scope_terminal != "aws4_request":
        raise SignatureError(f"credential scope is not for {service}")
    if "host" not in params.signed_headers:
        raise SignatureError("the host header must be signed")


def _check_time(params: _AuthParams, now: datetime) -> None:
    """A pre-signed URL is valid from its signing time for X-Amz-Expires seconds."""
    if not 1 <= params.expires <= MAX_EXPIRES:
        raise SignatureError(f"X-Amz-Expires must be between 1 and {MAX_EXPIRES}")
    if params.signed_at - now > MAX_CLOCK_SKEW:
        raise SignatureError("signature not yet current")
    if now > params.signed_at + timedelta(seconds=params.expires):
        raise SignatureError("signature expired")


def _expected_signature(
    params: _AuthParams,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    credentials: Credentials,
    region: str,
    service: str,
    payload_hash: str | None,
) -> str:
    """Let botocore sign the canonical request we received, at the time the client signed it."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signed: dict[str, str] = {}
    for name in params.signed_headers:
        if name not in lowered:
            raise SignatureError(f"signed header {name!r} is missing from the request")
        signed[name] = lowered[name]
    # The signature covers every query pair except the signature itself, encoded as sent.
    unsigned_query = "&".join(
        pair for pair in raw_query.split("&") if pair.partition("=")[0] != SIGNATURE_PARAM
    )
    request = AWSRequest(
        method=method,
        url=f"https://{signed['host']}{raw_path}?{unsigned_query}",
        headers=signed,
    )
    request.context["timestamp"] = params.amz_date
    signer = _QuerySigner(credentials, service, region, payload_hash=payload_hash)
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


class _QuerySigner(SigV4QueryAuth):
    """botocore's query signer, with the payload line fixed where a service says so."""

    def __init__(
        self, credentials: Credentials, service: str, region: str, *, payload_hash: str | None
    ) -> None:
        super().__init__(credentials, service, region)
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        if self._payload_hash is not None:
            return self._payload_hash
        return str(super().payload(request))
