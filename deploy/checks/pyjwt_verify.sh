#!/usr/bin/env bash
# A second check that Auth's tokens are standard JWTs: PyJWT (with `cryptography`)
# verifies one with nothing but the published JWK set, and refuses a forged one.
# The test suite does the same with a Rust implementation (jwt-simple); this one
# runs in CI, where Python is at hand.
#
#   bash deploy/checks/pyjwt_verify.sh [path/to/bulkhead]
#
# Needs python3 with `pip install 'pyjwt[crypto]'`. The token is minted the way
# Auth signs (same key format, claims and signing code) with a throwaway key
# folder, and the JWK set is what `GetJwks` publishes for it (`bulkhead jwks`).
set -euo pipefail
bulkhead=${1:-target/debug/bulkhead}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bulkhead" token --data-dir "$work" --role OWNER --tenant-slug acme 2>/dev/null >"$work/token"
"$bulkhead" jwks --data-dir "$work" >"$work/jwks.json"

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
assert claims["trole"] == "OWNER" and claims["tslug"] == "acme", claims
forged = token[:-5] + ("B" if token[-5] == "A" else "A") + token[-4:]
try:
    verify(forged)
except jwt.InvalidSignatureError:
    pass
else:
    sys.exit("PyJWT accepted a forged token")
print(f"PyJWT {jwt.__version__}: verified a token of tenant {claims['tid']} and refused a forged one")
PY
