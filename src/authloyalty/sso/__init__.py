"""sso: users, sessions and tokens."""
