"""The CDK app of the logs stack (``dynamodb-logs-{stage}``).

Only this package and :mod:`bridge.deploy` may import ``aws_cdk``: it comes with the
optional ``cdk`` extra (hundreds of MB of jsii bundles) that the log, the local cloud
and the Lambda handlers must never need.

jsii runs the CDK in a Node.js child process that prints a screen-wide banner when
Node is older than it would like; the variables below are read by that process, so
they are set here, before any submodule imports ``aws_cdk``.
"""

import os

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
# a comma-separated list of Node majors whose end-of-life banner is not shown
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,19,20,21")
