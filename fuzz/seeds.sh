#!/usr/bin/env bash
# Writes the seed inputs of every fuzz target into fuzz/corpus-raw/<target>/:
# the repository's configs and PKCS#12 test file, PKCS#12 variants made by
# openssl (each protection scheme, key type and refusal), and claim texts.
# Fuzzing starts from these and from the minimised corpus in fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")"
raw=corpus-raw
mkdir -p "$raw/config" "$raw/pkcs12" "$raw/token_json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# config: the development config, every section, and each refusal.
module=/usr/lib/softhsm/libsofthsm2.so
hsm="[hsm]
module = \"$module\"
token_label = \"access-tokens\"
pin_file = \"/etc/passwd\""
sed -e "s|@MODULE@|$module|" -e "s|@DEV@/pin|/etc/passwd|" ../hsm-config/dev.toml.in >"$raw/config/dev.toml"
printf '%s\n[[issuer]]\nname = "ttd"\nkid = "c5726728c38cfe6c16988454206b99ca29ae025e"\n[[issuer]]\nname = "digdir"\n' "$hsm" >"$raw/config/pinned.toml"
printf '[hsm]\nmodule = "%s"\ntoken_label = "t"\npin_credential = "hsm-pin"\n[token]\nlifetime_seconds = 60\nvalid_from_adjustment_seconds = 0\naudience = "platform.tt02.altinn.no"\n' "$module" >"$raw/config/credential.toml"
printf '%s\n[server]\nsocket = "/run/a.sock"\nsocket_mode = "0660"\nsocket_group = "apps"\n[audit]\nfile = "/var/log/a.jsonl"\n[[grant]]\nuid = 1000\nissuer = "ttd"\napps = ["app-a", "app-b"]\n' "$hsm" >"$raw/config/daemon.toml"
printf '%s\n[token]\nlifetime = 300\n' "$hsm" >"$raw/config/unknown-key.toml"
printf '%s\n[token]\nlifetime_seconds = "300"\n' "$hsm" >"$raw/config/wrong-type.toml"
printf '%s\n[token]\nlifetime_seconds = 10\nvalid_from_adjustment_seconds = 10\n' "$hsm" >"$raw/config/nbf-after-exp.toml"
printf '%s\n[[issuer]]\nname = "ttd"\n[[issuer]]\nname = "ttd"\n' "$hsm" >"$raw/config/twice.toml"
printf '[hsm]\nmodule = "/nonexistent.so"\ntoken_label = ""\n' >"$raw/config/empty-label.toml"

# pkcs12: Altinn's file and openssl's variants, accepted and refused.
cp ../tests/data/ttd-org.pfx "$raw/pkcs12/ttd-org.pfx"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -nodes -sha256 -days 30 -newkey rsa:2048 -subj /CN=ttd -keyout "$work/rsa.key" -out "$work/rsa.pem"
ossl req -x509 -nodes -sha256 -days 30 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=ttd -keyout "$work/p256.key" -out "$work/p256.pem"
ossl req -x509 -nodes -sha256 -days 30 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -subj /CN=ttd -keyout "$work/p384.key" -out "$work/p384.pem"
ossl req -x509 -nodes -sha256 -days 30 -newkey rsa:1024 -subj /CN=ttd -keyout "$work/weak.key" -out "$work/weak.pem"
pack() { # name key cert extra-args…
  local name=$1 key=$2 cert=$3
  shift 3
  ossl pkcs12 -export -inkey "$key" -in "$cert" -out "$raw/pkcs12/$name.pfx" -passout pass: "$@"
}
pack modern-aes "$work/rsa.key" "$work/rsa.pem" -keypbe AES-256-CBC -certpbe AES-256-CBC -macalg sha256
pack legacy-3des "$work/rsa.key" "$work/rsa.pem" -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1
pack legacy-rc2 "$work/rsa.key" "$work/rsa.pem" -legacy
pack p256 "$work/p256.key" "$work/p256.pem"
pack p384 "$work/p384.key" "$work/p384.pem"
pack rsa1024 "$work/weak.key" "$work/weak.pem"
pack no-mac "$work/p256.key" "$work/p256.pem" -nomac
pack unencrypted "$work/p256.key" "$work/p256.pem" -keypbe NONE -certpbe NONE
# Neither MAC nor encryption: a mutation reaches the key and certificate
# parsers instead of failing the integrity check or the decryption.
pack plain-rsa "$work/rsa.key" "$work/rsa.pem" -keypbe NONE -certpbe NONE -nomac
pack plain-p256 "$work/p256.key" "$work/p256.pem" -keypbe NONE -certpbe NONE -nomac
pack plain-p384 "$work/p384.key" "$work/p384.pem" -keypbe NONE -certpbe NONE -nomac
pack plain-rsa1024 "$work/weak.key" "$work/weak.pem" -keypbe NONE -certpbe NONE -nomac
ossl pkcs12 -export -nokeys -in "$work/rsa.pem" -out "$raw/pkcs12/cert-only.pfx" -passout pass:
ossl pkcs12 -export -inkey "$work/p256.key" -in "$work/p256.pem" -out "$raw/pkcs12/password.pfx" -passout pass:secret

# token_json: texts that need escaping, in the byte layout arbitrary reads.
printf 'ttd\0my-app\0platform.altinn.no\0' >"$raw/token_json/plain"
printf 'a/b+<c>&'"'"'d"e\\f\001\n\xc3\xa6\xc3\xb8\xc3\xa5\x7f\t\r\b\x0c\0\xe2\x80\xa8x' >"$raw/token_json/escapes"
printf '\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x00\x00\x00\x00\x00\x00\x80' >"$raw/token_json/extremes"
echo "seeds in $(pwd)/$raw"
