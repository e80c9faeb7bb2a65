#!/usr/bin/env bash
# A second check that Auth's tokens are standard JWTs: PyJWT (with `cryptography`)
# verifies one Auth issued at Login with nothing but the published JWK set, and
# refuses a forged one. The test suite does the same with a Rust implementation
# (jwt-simple); this one runs in CI, where Python is at hand, against a running
# `bulkhead up` (its data folder and Auth's address).
#
#   bash deploy/checks/pyjwt_verify.sh path/to/bulkhead DATA_DIR AUTH_ADDR
#
# Needs python3 with `pip install 'pyjwt[crypto]'` and grpcurl.
set -euo pipefail
bulkhead=$1 data=$2 auth=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

grpcurl -plaintext -d "{\"email\":\"admin@bulkhead.local\",\"password\":\"$(cat "$data/admin-password")\"}" \
  "$auth" bulkhead.auth.v1.AuthService/Login \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["accessToken"])' >"$work/token"
"$bulkhead" jwks --data-dir "$data" >"$work/jwks.json"

python3 - "$work/jwks.json" "$work/token" <<'PY'
import json, sys
try:
    import jwt
except ImportError:
    sys.exit("PyJWT is missing: pip install 'pyjwt[crypto]'")
jwks = json.load(open(sys.argv[1]))
token = open(sys.argv[2]).read().strip()

def verify(token):
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid)
    return jwt.decode(token, key.key, algorithms=["EdDSA"], audience="bulkhead", issuer="bulkhead-auth")

claims = verify(token)
assert claims["trole"] == "OWNER" and claims["tslug"] == "default", claims
forged = token[:-5] + ("B" if token[-5] == "A" else "A") + token[-4:]
try:
    verify(forged)
except jwt.InvalidSignatureError:
    pass
else:
    sys.exit("PyJWT accepted a forged token")
print(f"PyJWT {jwt.__version__}: verified a token of tenant {claims['tid']} and refused a forged one")
PY
