#!/bin/bash
# LocalStack runs this once it is ready (ready.d hook). It creates Emporium's DynamoDB tables and
# S3 bucket by running `emporium init` itself, so the schema has one definition: the Rust table
# definitions each service exports. The binary is mounted from the Emporium image (see
# compose.yaml); nothing here repeats a table, index or TTL attribute.
set -euo pipefail

bin="${EMPORIUM_BIN:-/opt/emporium/emporium}"
if [ ! -x "$bin" ]; then
  echo "emporium-init: no emporium binary at $bin; mount one there (see localstack/README.md)" >&2
  exit 1
fi

# Inside the LocalStack container its own endpoint is localhost:4566. The credentials only name
# LocalStack's default account; LocalStack does not check them.
export AWS_ENDPOINT_URL="${EMPORIUM_INIT_ENDPOINT:-http://localhost:4566}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"

exec "$bin" init \
  --storage "${EMPORIUM_STORAGE:-dynamodb://emporium}" \
  --blobs "${EMPORIUM_BLOBS:-s3://emporium-assets}" \
  --log-format json
