#!/usr/bin/env bash
# Ed25519 signing keys and JWKS for stockgate's reservation tokens, the gateway's service
# assertions to settlement (and a dev identity key), with openssl only.
#   deploy/keys.sh key FILE.pem                 # a new PKCS#8 Ed25519 private key (mode 600)
#   deploy/keys.sh jwks FILE.pem:KID [...]      # the public JWKS of one or more keys, to stdout
# Rotation (deploy/README.md): publish the JWKS with old + new key to settlement first, then
# switch the gateway to the new key and kid (it verifies with the same JWKS, so the old key's
# holds still confirm), and drop the old key from the JWKS after the hold TTL.
# The gateway assertion key (deploy/README.md, "Rotate the gateway assertion key"):
#   deploy/keys.sh key gateway-assertion-key.pem        # to the gateway only
#   deploy/keys.sh jwks gateway-assertion-key.pem:gw-1 > gateway-assertion-jwks.json   # to settlement only
# Rotation in the same order: JWKS with old + new kid to settlement first, then the gateway's
# key and signing_key_id.
set -euo pipefail

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

case "${1:-}" in
  key)
    [ -n "${2:-}" ] || { echo "usage: $0 key FILE.pem" >&2; exit 2; }
    (umask 077 && openssl genpkey -algorithm ed25519 -out "$2")
    ;;
  jwks)
    shift
    [ "$#" -gt 0 ] || { echo "usage: $0 jwks FILE.pem:KID [...]" >&2; exit 2; }
    printf '{"keys":['
    sep=""
    for pair in "$@"; do
      file="${pair%%:*}"; kid="${pair#*:}"
      # The DER SubjectPublicKeyInfo of an Ed25519 key ends with the 32-byte public key.
      x="$(openssl pkey -in "$file" -pubout -outform DER | tail -c 32 | b64url)"
      printf '%s{"kty":"OKP","crv":"Ed25519","use":"sig","alg":"EdDSA","kid":"%s","x":"%s"}' "$sep" "$kid" "$x"
      sep=","
    done
    printf ']}\n'
    ;;
  *) echo "usage: $0 key FILE.pem | jwks FILE.pem:KID [...]" >&2; exit 2 ;;
esac
