"""Lambda handler modules the tests run through the local cloud, as AWS would run them."""
