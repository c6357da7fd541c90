"""``$connect`` of the bridge API: the second gate after IAM, and who is calling.

API Gateway has already checked the SigV4 signature against ``execute-api:Invoke`` on
``…/$connect`` before this runs. This function applies the optional source-IP
allowlist and records the connection's principal (the caller ARN, not the access
key), which every later message of the connection is judged by: API Gateway reports
the IAM identity on ``$connect`` only. It cannot post to the new socket (it is not
open yet), so the session is attached and its buffer delivered on ``hello``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bridge.lambdas import _bridge, _env

_env.prepare("dynamodb")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = _bridge.settings()
    connection = _bridge.connection_id(event)
    ip = _bridge.source_ip(event)
    if not config.allows(ip):
        _env.log("refused: source address not in the allowlist", connection=connection, ip=ip)
        return {"statusCode": 403, "body": "source address not allowed"}
    owner = _bridge.principal(event)
    if owner is None:
        # Only an API without IAM auth (offline's --no-iam-auth) gets here unsigned.
        owner = "anonymous"
    now = time.time()
    _bridge.table(config).connection_put(
        connection,
        {
            "owner": owner,
            "connected_at": now,
            "ip": ip,
            "ttl": math.ceil(now + _bridge.CONNECTION_TTL),
        },
    )
    _env.log("connected", connection=connection, owner=owner, ip=ip)
    return {"statusCode": 200}
