"""Internal plumbing shared by the hooks, operators and features: not part of the public API, may change."""
