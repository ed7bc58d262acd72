#!/usr/bin/env bash
# make-certs.sh DIR [--force]
#
# Development PKI (SPEC section 7), with the openssl command line:
#   DIR/certs/root.crt, root.key                 root CA, 10 years
#   DIR/certs/intermediate.crt, intermediate.key intermediate CA, 5 years
#   DIR/certs/NAME.key, NAME.crt                 leaf (EC P-256, 2 years) + intermediate,
#                                                CN=NAME, SAN DNS:NAME, DNS:*.NAME.local
# and DIR/directory/90-certificates.json: one `certificates` record per
# operator with the SHA-256 fingerprint of its leaf.
#
# Does nothing when everything exists, unless --force is given.
set -euo pipefail

usage() { echo "usage: $0 DIR [--force]" >&2; exit 2; }

dir=""; force=0
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	-h|--help) usage ;;
	-*) usage ;;
	*) [ -z "$dir" ] || usage; dir=$a ;;
	esac
done
[ -n "$dir" ] || usage
command -v openssl >/dev/null || { echo "$0: openssl not found" >&2; exit 1; }

names="public-proxy-1.ga private-proxy-1.ga internal-server hd-1"
certs=$dir/certs
dirs=$dir/directory
json=$dirs/90-certificates.json

complete=1
for f in root.crt root.key intermediate.crt intermediate.key; do
	[ -f "$certs/$f" ] || complete=0
done
for n in $names; do
	[ -f "$certs/$n.crt" ] && [ -f "$certs/$n.key" ] || complete=0
done
if [ $force = 0 ] && [ $complete = 1 ] && [ -f "$json" ]; then
	echo "certificates in $certs are present (use --force to regenerate)"
	exit 0
fi

mkdir -p "$certs" "$dirs"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077

ecparam() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ $force = 1 ] || [ $complete = 0 ]; then
	# Root CA.
	ecparam "$tmp/root.key"
	openssl req -x509 -new -key "$tmp/root.key" -sha256 -days 3650 \
		-subj "/O=Hyper dev/CN=Hyper dev root CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$tmp/root.crt" 2>/dev/null

	# Intermediate CA: outlives every leaf.
	ecparam "$tmp/intermediate.key"
	openssl req -new -key "$tmp/intermediate.key" \
		-subj "/O=Hyper dev/CN=Hyper dev intermediate CA" -out "$tmp/intermediate.csr" 2>/dev/null
	cat >"$tmp/intermediate.ext" <<-EOF
	basicConstraints=critical,CA:TRUE,pathlen:0
	keyUsage=critical,keyCertSign,cRLSign
	subjectKeyIdentifier=hash
	authorityKeyIdentifier=keyid
	EOF
	openssl x509 -req -in "$tmp/intermediate.csr" -CA "$tmp/root.crt" -CAkey "$tmp/root.key" \
		-CAcreateserial -days 1825 -sha256 -extfile "$tmp/intermediate.ext" \
		-out "$tmp/intermediate.crt" 2>/dev/null

	# Leaves: certificate file is leaf followed by the intermediate.
	for n in $names; do
		ecparam "$tmp/$n.key"
		openssl req -new -key "$tmp/$n.key" -subj "/CN=$n" -out "$tmp/$n.csr" 2>/dev/null
		cat >"$tmp/$n.ext" <<-EOF
		basicConstraints=critical,CA:FALSE
		keyUsage=critical,digitalSignature,keyEncipherment
		extendedKeyUsage=serverAuth,clientAuth
		subjectAltName=DNS:$n,DNS:*.$n.local
		subjectKeyIdentifier=hash
		authorityKeyIdentifier=keyid
		EOF
		openssl x509 -req -in "$tmp/$n.csr" -CA "$tmp/intermediate.crt" \
			-CAkey "$tmp/intermediate.key" -CAcreateserial -days 730 -sha256 \
			-extfile "$tmp/$n.ext" -out "$tmp/$n.leaf" 2>/dev/null
		cat "$tmp/$n.leaf" "$tmp/intermediate.crt" >"$tmp/$n.crt"
	done

	for f in root intermediate $names; do
		chmod 644 "$tmp/$f.crt"
		chmod 600 "$tmp/$f.key"
		mv -f "$tmp/$f.crt" "$tmp/$f.key" "$certs/"
	done
fi

# Fingerprint records (written to a temporary file, then renamed, so a
# watching Hyper never reads half of it).
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
	echo '{"records": ['
	sep=""
	for n in $names; do
		fp=$(openssl x509 -in "$certs/$n.crt" -outform DER | sha256sum | cut -d' ' -f1)
		printf '%s  {"name": "%s", "section": "certificates", "created_at": "%s",\n' "$sep" "$n" "$now"
		printf '   "data": [{"fingerprint": "%s", "key_usage": "encryption"}]}' "$fp"
		sep=$',\n'
	done
	printf '\n]}\n'
} >"$tmp/certificates.json"
chmod 644 "$tmp/certificates.json"
mv -f "$tmp/certificates.json" "$json"
echo "certificates written to $certs, fingerprints to $json"
