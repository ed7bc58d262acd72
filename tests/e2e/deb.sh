#!/usr/bin/env bash
# deb.sh - the Debian package: `make deb` (reusing the release build), lintian
# without errors, `dpkg -i` on this machine, the installed programs, units,
# user, settings and man pages, the seed's request through the five processes
# started from /usr/bin, then `dpkg --purge` and nothing of it left behind.
# Needs root and dpkg/apt (it installs the packaging tools through make deb);
# skipped where those are missing, or where a hyper-relay package is already
# installed (it is not this test's to remove).  About 30 s once the tools are
# there and bin/ is built.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

skip() {
	echo "# skipped: $*"
	echo "0 passed, 0 failed"
	E2E_FINISHED=1
	exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root (apt-get, dpkg -i)"
for t in dpkg dpkg-deb apt-get; do
	command -v $t >/dev/null || skip "no $t: not a Debian system"
done
dpkg -s hyper-relay >/dev/null 2>&1 && skip "a hyper-relay package is installed already"

VERSION=$(sed -n 's/^VERSION[[:space:]]*:=[[:space:]]*//p' Makefile)
DEB=build/deb/hyper-relay_${VERSION}_$(dpkg --print-architecture).deb
UNITS="hyper@.service proxy-public.service proxy-private.service internal-server.service"
UNITDIR=/lib/systemd/system
installed=

# Whatever happens, the machine does not keep the package.
deb_undo() {
	[ -n "$installed" ] && dpkg --purge hyper-relay >/dev/null 2>&1
	installed=
}
trap 'rc=$?; deb_undo; (exit $rc); e2e_cleanup' EXIT

# --- build -----------------------------------------------------------------
check "make deb builds $DEB" bash -c "make deb >$E2E_RUN/make-deb.log 2>&1 && [ -f $DEB ]"
[ -f "$DEB" ] || finish

check "the package holds the programs, the units, the settings and the man pages" bash -c "
	dpkg-deb -c $DEB | awk '{print \$6}' >$E2E_RUN/contents
	for f in usr/bin/hyper usr/bin/proxy usr/bin/internal-server \
	    lib/systemd/system/hyper@.service lib/systemd/system/proxy-public.service \
	    lib/systemd/system/proxy-private.service lib/systemd/system/internal-server.service \
	    etc/hyper-relay/roles/public-proxy/000_base.yml etc/hyper-relay/roles/private-proxy/000_base.yml \
	    etc/hyper-relay/roles/public-proxy-hyper/000_base.yml etc/hyper-relay/roles/private-proxy-hyper/000_base.yml \
	    etc/hyper-relay/certs/ etc/hyper-relay/directory/ \
	    usr/share/man/man1/proxy.1.gz usr/share/man/man1/hyper.1.gz usr/share/man/man1/internal-server.1.gz \
	    usr/share/doc/hyper-relay/README.md; do
		grep -qx \"./\$f\" $E2E_RUN/contents || { echo \"missing \$f\"; exit 1; }
	done"
check "the package holds no key, certificate or development settings" bash -c "
	! grep -E '\\.(key|pem|crt|p12)\$|settings/dev|/run/' $E2E_RUN/contents"

# lintian exits non-zero on an error tag (or when it cannot run at all).
check "lintian reports no error" bash -c "
	lintian $DEB >$E2E_RUN/lintian.log 2>&1; rc=\$?; cat $E2E_RUN/lintian.log
	[ \$rc -eq 0 ] && ! grep -E '^E:' $E2E_RUN/lintian.log"
grep -E '^W:' "$E2E_RUN/lintian.log" | sed 's/^/# lintian: /'

# --- install ---------------------------------------------------------------
installed=1
check "dpkg -i installs it" dpkg -i "$DEB"
check "dpkg knows it at version $VERSION" \
	bash -c "[ \"\$(dpkg-query -W -f='\${Status} \${Version}' hyper-relay)\" = 'install ok installed $VERSION' ]"

for p in proxy hyper internal-server; do
	check "/usr/bin/$p --version prints $VERSION" bash -c "[ \"\$(/usr/bin/$p --version)\" = '$p $VERSION' ]"
done
check "internal-server -V prints $VERSION" bash -c "[ \"\$(/usr/bin/internal-server -V)\" = 'internal-server $VERSION' ]"

# Every line of the example units is in the installed ones (hardening
# included), with the packaged paths; the system user is added.
units_match() {
	local u line
	for u in $UNITS; do
		[ -f "$UNITDIR/$u" ] || { echo "no $UNITDIR/$u"; return 1; }
		while IFS= read -r line; do
			line=${line//\/usr\/local\//\/usr\/}
			grep -qxF -- "$line" "$UNITDIR/$u" || { echo "$u lacks: $line"; return 1; }
		done <"examples/systemd/$u"
		grep -qx 'User=hyper-relay' "$UNITDIR/$u" || { echo "$u: no User=hyper-relay"; return 1; }
		grep -q '/usr/local' "$UNITDIR/$u" && { echo "$u still names /usr/local"; return 1; }
	done
	return 0
}
check "the four units are installed with the examples' hardening and /usr/bin" units_match
if command -v systemd-analyze >/dev/null; then
	check "systemd-analyze verify accepts the installed units" \
		systemd-analyze verify "$UNITDIR/proxy-public.service" "$UNITDIR/proxy-private.service" \
		"$UNITDIR/internal-server.service" "$UNITDIR/hyper@public-proxy-hyper.service"
else
	echo "# no systemd-analyze here: the units are not verified"
fi
check "no unit is enabled by the installation" bash -c "
	! ls /etc/systemd/system/*.wants/ 2>/dev/null | grep -E '^(proxy-public|proxy-private|internal-server|hyper@.*)\\.service\$'"

check "the system user hyper-relay exists (system uid, no login, no home)" bash -c "
	IFS=: read -r n _ uid gid _ home shell < <(getent passwd hyper-relay) &&
	echo \"\$n \$uid \$gid \$home \$shell\" && [ \"\$uid\" -lt 1000 ] &&
	[ \"\$shell\" = /usr/sbin/nologin ] && [ ! -e \"\$home\" ] && getent group hyper-relay"
check "/etc/hyper-relay holds the example roles and empty certs/ and directory/" bash -c "
	ls /etc/hyper-relay/roles/*/000_base.yml | wc -l | grep -qx 4 &&
	[ -z \"\$(find /etc/hyper-relay/certs /etc/hyper-relay/directory -mindepth 1)\" ] &&
	! find /etc/hyper-relay -name '*.key' | grep ."
check "dpkg -i again (the upgrade path) keeps the user and the settings" bash -c "
	uid=\$(id -u hyper-relay) && dpkg -i $DEB && [ \"\$(id -u hyper-relay)\" = \"\$uid\" ] &&
	[ -f /etc/hyper-relay/roles/public-proxy/000_base.yml ]"
check "man pages and README are installed" bash -c "
	zcat /usr/share/man/man1/proxy.1.gz | grep -q 'run public' &&
	zcat /usr/share/man/man1/hyper.1.gz | grep -q 'server run' &&
	[ -f /usr/share/doc/hyper-relay/README.md ]"

# --- the seed's chain from the installed programs ---------------------------
[ -f settings/dev/certs/root.crt ] || scripts/make-certs.sh settings/dev >/dev/null
CHAIN_BIN=/usr/bin
. tests/e2e/five.sh
# A port that free_port reported free can be taken by another test before
# the program binds it: then the chain starts once more on new ports.
chain_up() {
	local try
	for try in 1 2; do
		five_setup
		five_start_all
		serves_within 10 && return 0
		echo "# chain attempt $try did not serve within 10 s; logs:"
		tail -n 3 "$E2E_RUN"/{public,private,public-hyper,private-hyper,internal}.log | sed 's/^/#   /'
		stop_all
	done
	return 1
}
chain_up
running_from_usr_bin() {
	local p got
	got=$(for p in "${E2E_PID[@]}"; do readlink "/proc/$p/exe"; done | sort -u | tr '\n' ' ')
	echo "running: $got"
	[ "$got" = "/usr/bin/hyper /usr/bin/internal-server /usr/bin/proxy " ]
}
check "the five processes run the installed programs" running_from_usr_bin
check "the seed's request through /usr/bin programs prints the success message" serves_within 5
check "its body is exactly {\"message\": \"success\"}" \
	bash -c "[ \"\$(curl -sS --max-time 10 --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/jsonrpc)\" = '{\"message\": \"success\"}' ]"
for n in $FIVE_NAMES; do
	stop_bg "$n"
	rc=$?
	check "installed $n exits 0 on SIGTERM" [ "$rc" -eq 0 ]
done

# --- purge -----------------------------------------------------------------
check "dpkg --purge removes it" dpkg --purge hyper-relay
installed=
check "the programs are gone" bash -c "! ls /usr/bin/hyper /usr/bin/proxy /usr/bin/internal-server 2>/dev/null | grep ."
check "the units are gone" bash -c "for u in $UNITS; do [ ! -e $UNITDIR/\$u ] || exit 1; done"
check "the user and group hyper-relay are gone" bash -c "! getent passwd hyper-relay && ! getent group hyper-relay"
check "/etc/hyper-relay is gone" [ ! -e /etc/hyper-relay ]
check "dpkg no longer knows the package" bash -c "! dpkg -s hyper-relay >/dev/null 2>&1"
finish
