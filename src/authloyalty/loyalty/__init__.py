"""loyalty: the points ledger."""
