#!/usr/bin/env bash
# The development CA: forwards every argument to the `dev-ca` binary (building it when needed),
# run from the project root so that certificates land in ./certs/.
#   ./scripts/dev-ca.sh init
#   ./scripts/dev-ca.sh server localhost 127.0.0.1
#   ./scripts/dev-ca.sh generate us-east-1-node-01 node1.example.com
#   ./scripts/dev-ca.sh verify us-east-1-node-01
#   ./scripts/dev-ca.sh env us-east-1-node-01
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --quiet --locked -p dev-ca
exec "$root/target/debug/dev-ca" "$@"
