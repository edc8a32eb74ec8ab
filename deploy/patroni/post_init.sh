#!/bin/sh
# Patroni bootstrap.post_init: runs once on the first leader with a superuser connection
# string as $1. One database and one owner per service; passwords from the environment.
set -eu
: "${SSO_DB_PASSWORD:?}" "${LOYALTY_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 -v sso_pw="$SSO_DB_PASSWORD" -v loyalty_pw="$LOYALTY_DB_PASSWORD" "$1" <<'SQL'
CREATE ROLE sso LOGIN PASSWORD :'sso_pw';
CREATE ROLE loyalty LOGIN PASSWORD :'loyalty_pw';
CREATE DATABASE sso OWNER sso;
CREATE DATABASE loyalty OWNER loyalty;
SQL
