"""SigV4-presigned WebSocket URLs, as API Gateway's IAM authorization on ``$connect``
expects them.

A browser-style WebSocket handshake cannot carry an ``Authorization`` header, so the
signature travels in the query string (``X-Amz-*``), computed over the ``https://``
form of the ``wss://`` URL for service ``execute-api``; a session token (SSO, assumed
roles) is part of the signed query. The credentials come from the standard chain
(``--profile``, environment, SSO cache, instance role).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from bridge.core.errors import ValidationError

#: Long enough for a slow handshake, short enough that a leaked URL is soon useless.
DEFAULT_EXPIRES = 300
_HTTP_FOR = {"wss": "https", "ws": "http"}


def presign(
    url: str, credentials: ReadOnlyCredentials, region: str, expires: int = DEFAULT_EXPIRES
) -> str:
    """``url`` (ws:// or wss://, query allowed) with a SigV4 signature valid ``expires`` s."""
    parts = urlsplit(url)
    scheme = _HTTP_FOR.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValidationError(f"{url!r} is not a ws:// or wss:// URL")
    request = AWSRequest(method="GET", url=urlunsplit(parts._replace(scheme=scheme)))
    SigV4QueryAuth(credentials, "execute-api", region, expires=expires).add_auth(request)
    signed = urlsplit(str(request.url))
    return urlunsplit(signed._replace(scheme=parts.scheme))
