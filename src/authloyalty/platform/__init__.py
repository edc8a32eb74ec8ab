"""Infrastructure shared by the services: settings, database, events, HTTP plumbing."""
