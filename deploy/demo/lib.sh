# Shared by the walkthroughs: addresses, the admin's password, and grpcurl and
# JSON helpers. Sourced, not run.
AUTH=${AUTH_ADDR:-127.0.0.1:50051}
TENANT=${TENANT_ADDR:-127.0.0.1:50052}
TASK=${TASK_ADDR:-127.0.0.1:50053}
AUDIT=${AUDIT_ADDR:-127.0.0.1:50054}
DATA=${BULKHEAD_DATA_DIR:-.bulkhead}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-$(cat "$DATA/admin-password")}
say() { printf '\n== %s\n' "$*"; }
# A call as the holder of a token; errors are printed, not fatal.
rpc() { local token=$1 addr=$2 method=$3 body=$4
  grpcurl -plaintext -H "authorization: Bearer $token" -d "$body" "$addr" "$method" 2>&1 || true; }
# One value of the JSON on stdin, e.g. field "['task']['id']".
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
# A Python expression over the JSON on stdin, bound to d.
show() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
login() { grpcurl -plaintext -d "{\"email\":\"$1\",\"password\":\"$2\"}" "$AUTH" \
  bulkhead.auth.v1.AuthService/Login | field "['tokens']['accessToken']"; }
