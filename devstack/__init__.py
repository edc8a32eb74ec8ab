"""Developer infrastructure for authloyalty: never installed, never imported by the services.

Provisioning (Debian packages, the Kafka jars, PostgreSQL clusters, a throwaway TLS CA, the
nginx and Prometheus configs) and the local multi-process stack, whose processes run under
supervisord. Entry point: ``python -m devstack --help`` (or the ``make stack-*`` targets).
"""
