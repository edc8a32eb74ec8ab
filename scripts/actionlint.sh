#!/usr/bin/env bash
# Checks the GitHub Actions workflows (.github/workflows) with actionlint, the Go module
# github.com/rhysd/actionlint. On first use (or when the pinned version changes) it is built with
# `go install` into the cache (~/.cache/authloyalty/bin); Go's module and build caches live there
# too. Arguments are passed to actionlint (none: every workflow of the repository).
set -euo pipefail

VERSION=v1.7.12
cache="${AUTHLOYALTY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/authloyalty}"
bin="$cache/bin/actionlint"

if [ ! -x "$bin" ] || [ "$("$bin" -version 2>/dev/null | head -n 1)" != "$VERSION" ]; then
  go="$(command -v go || true)"
  if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then
    go=/usr/local/go/bin/go
  fi
  if [ -z "$go" ]; then
    echo "actionlint $VERSION is built from the Go module proxy: install Go (1.25+) first" >&2
    exit 1
  fi
  echo "installing actionlint $VERSION into $cache/bin (go install, once)" >&2
  GOBIN="$cache/bin" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" \
    GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    "$go" install "github.com/rhysd/actionlint/cmd/actionlint@$VERSION"
fi
exec "$bin" "$@"
