"""SMS runs: concurrent sending under the never-twice ledger, and the delivery wait."""
