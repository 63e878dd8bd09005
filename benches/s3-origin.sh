#!/usr/bin/env bash
# Serves a folder of bench assets from an S3 bucket on loopback, for ../shared/bench/run.sh:
#   benches/s3-origin.sh /tmp/bench-assets 8095     # then: run.sh ... s3=http://127.0.0.1:8095/video
# Stays in the foreground; Ctrl-C stops everything it started. Needs the release build.
#
# STORE=moto (default): moto's S3 (target/moto-venv, which tests/run-all.sh installs); every
#   file is uploaded through the admin API, so each object carries its SHA-256 as in production.
#   moto is Python and serves a few ranged reads per second of a large object: it measures the
#   emulator more than the origin (see README, Performance).
# STORE=nginx: nginx serves ASSETS as the bucket (path-style keys, Range, If-Match, ETag), a fast
#   loopback store that measures the origin. Its objects carry no sha256 metadata, so they are
#   served with the store-derived ETag ("s3-...").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
assets=$(cd "${1:?usage: s3-origin.sh ASSETS_DIR PORT}" && pwd)
port=${2:?usage: s3-origin.sh ASSETS_DIR PORT}
store_port=${STORE_PORT:-5055}
admin_port=${ADMIN_PORT:-9195}
venv=$root/target/moto-venv
bin=$root/target/release/video-origin
[ -x "$bin" ] || { echo "no release build: cargo build --release" >&2; exit 1; }
token=bench-admin-token-0123456789abcdef0123
run=$(mktemp -d)
cd "$run"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
case ${STORE:-moto} in
moto)
  [ -x "$venv/bin/moto_server" ] || { echo "moto missing: run bash tests/run-all.sh once" >&2; exit 1; }
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$store_port" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$store_port/" && break; sleep 0.2; done
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$venv/bin/python" -c "
import boto3
boto3.client('s3', endpoint_url='http://127.0.0.1:$store_port', region_name='us-east-1').create_bucket(Bucket='bench')"
  ;;
nginx)
  mkdir -p tmp
  cat >nginx.conf <<CONF
daemon off;
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 16384; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp;
    uwsgi_temp_path tmp; scgi_temp_path tmp;
    server {
        listen 127.0.0.1:$store_port backlog=4096;
        location = /bench/ { return 200; }        # HeadBucket
        location /bench/ { alias $assets/; etag on; }
    }
}
CONF
  nginx -p "$run/" -c "$run/nginx.conf" -e stderr &
  pids+=($!)
  sleep 0.5
  ;;
*) echo "STORE is moto or nginx" >&2; exit 1 ;;
esac

export VIDEO_ORIGIN_STORAGE__BACKEND=s3 VIDEO_ORIGIN_STORAGE__S3__BUCKET=bench \
  VIDEO_ORIGIN_STORAGE__S3__ENDPOINT_URL=http://127.0.0.1:$store_port \
  VIDEO_ORIGIN_STORAGE__S3__FORCE_PATH_STYLE=true VIDEO_ORIGIN_STORAGE__S3__ACCESS_KEY_ID=test \
  VIDEO_ORIGIN_STORAGE__S3__SECRET_ACCESS_KEY=test VIDEO_ORIGIN_ADMIN__TOKENS__BENCH=$token \
  VIDEO_ORIGIN_ADMIN__LISTEN=127.0.0.1:$admin_port
mkdir -p empty
"$bin" serve --listen "127.0.0.1:$port" --assets "$run/empty" &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$admin_port/healthz" && break; sleep 0.2; done
if [ "${STORE:-moto}" = moto ]; then
  for f in "$assets"/*; do
    name=$(basename "$f")
    curl -sf -o /dev/null -T "$f" -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$admin_port/admin/assets/$name" || { echo "upload of $name failed" >&2; exit 1; }
    echo "uploaded $name" >&2
  done
fi
echo "serving $assets from the ${STORE:-moto} bucket on http://127.0.0.1:$port/video" >&2
wait
