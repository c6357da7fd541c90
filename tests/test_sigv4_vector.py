"""The SigV4 verifier against AWS's own published example, not only against our signer.

The vector is the presigned GET of AWS's "Authenticating Requests: Using Query
Parameters (AWS Signature Version 4)" page (Amazon S3 API reference): key
AKIAIOSFODNN7EXAMPLE, signed 2013-05-24T00:00:00Z for 86400 s. A query-signed request
to S3 signs ``UNSIGNED-PAYLOAD`` (execute-api the empty body's hash), and the path has
nothing to normalize, so the verifier, told S3's payload line, must compute exactly
what AWS documents.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.offline.sigv4 import SignatureError, verify_presigned

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SIGNATURE = "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    f"&X-Amz-Signature={SIGNATURE}"
)
SIGNED_AT = datetime(2013, 5, 24, 0, 0, 1, tzinfo=UTC)


def verify(query: str = QUERY, secret: str = SECRET_KEY, now: datetime = SIGNED_AT) -> object:
    return verify_presigned(
        method="GET",
        raw_path="/test.txt",
        raw_query=query,
        headers={"Host": "examplebucket.s3.amazonaws.com"},
        access_key=ACCESS_KEY,
        secret_key=secret,
        region="us-east-1",
        service="s3",
        now=now,
        payload_hash="UNSIGNED-PAYLOAD",  # what S3's presigned URLs sign
    )


def test_awss_published_presigned_url_verifies() -> None:
    caller = verify()
    assert caller.access_key == ACCESS_KEY


def test_one_changed_character_of_the_vector_is_refused() -> None:
    with pytest.raises(SignatureError, match="signature does not match"):
        verify(query=QUERY.replace(SIGNATURE, SIGNATURE[:-1] + "5"))
    with pytest.raises(SignatureError, match="signature does not match"):
        verify(secret=SECRET_KEY[:-1] + "X")


def test_the_vector_expires_after_its_86400_seconds() -> None:
    with pytest.raises(SignatureError, match="expired"):
        verify(now=datetime(2013, 5, 25, 0, 0, 1, tzinfo=UTC))
