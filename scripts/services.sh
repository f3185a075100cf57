#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, user postgres, trust auth) and Redis
# (127.0.0.1:6379) are up: start them if they are installed, install them with
# apt-get if they are not. Also install Chromium, which the dashboard's browser
# tests drive (tests/dashboard).
set -euo pipefail

log() { echo "services: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    log "cannot install $* here (no apt-get); install it and run this again"
    exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for NAME CMD...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$name did not come up"
  exit 1
}

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

ensure_postgres() {
  if command -v pg_isready >/dev/null 2>&1 && postgres_up; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  local hba=/etc/postgresql/$version/main/pg_hba.conf
  # Tests connect as postgres over TCP without a password, as CI machines do.
  if ! grep -q "mentionsync-trust" "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust # mentionsync-trust\nhost all all ::1/128 trust # mentionsync-trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || \
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  wait_for PostgreSQL postgres_up
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }

ensure_redis() {
  if command -v redis-cli >/dev/null 2>&1 && redis_up; then return 0; fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing Redis"
    apt_install redis-server
  fi
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    --maxmemory-policy noeviction
  wait_for Redis redis_up
}

# Debian's Chromium, driven by Playwright with executable_path: Playwright's own
# browser download is not used. CHROMIUM names another binary.
ensure_chromium() {
  if [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then return 0; fi
  log "installing Chromium (for the dashboard's browser tests)"
  apt_install chromium
}

ensure_postgres
ensure_redis
ensure_chromium
log "PostgreSQL, Redis and Chromium are up"
