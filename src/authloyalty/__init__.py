"""authloyalty: a loyalty-points ledger with its own authorization service."""

__version__ = "0.1.0"
