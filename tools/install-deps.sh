#!/bin/bash
# Install the Debian packages Postern needs to build, run and test.
# Idempotent: installs only what is missing; runs apt-get update at most once.
set -euo pipefail
PKGS=(build-essential pkg-config libcmocka-dev libunbound-dev unbound libpcre2-dev libssl-dev liblua5.4-dev python3 swaks socat postfix libsasl2-modules e2fsprogs
      libspf2-dev libopendkim-dev libopendmarc-dev opendkim opendkim-tools libmilter-dev publicsuffix clang
      openssl bsdutils libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl sasl2-bin libsasl2-modules-db
      slapd ldap-utils libldap-dev libsqlite3-dev clamav-daemon rspamd libjansson-dev libsasl2-dev dovecot-core dovecot-lmtpd
      libmicrohttpd-dev prometheus sqlite3 libcrypt-dev chromium chromium-driver
      debhelper lintian fakeroot dpkg-dev man-db curl zlib1g-dev libxml2-utils nsd ldnsutils time libhiredis-dev redis-server
      librabbitmq-dev rabbitmq-server amqp-tools)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# posternd started as root drops to its own system user (as Postfix has
# "postfix"), never to the shared "nobody"
ensure_user() {
  getent passwd postern >/dev/null && return 0
  echo "deps: creating system user postern"
  $SUDO useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postern
}
if [ ${#missing[@]} -eq 0 ]; then
  ensure_user
  echo "deps: all installed"
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix brings smtp-sink and smtp-source; no mail system configuration is wanted.
# libsasl2-modules: the test Postfix enables SASL so XCLIENT LOGIN becomes its login.
# --no-install-recommends leaves out what swaks only recommends: Net::SSLeay and IO::Socket::SSL
# (its STARTTLS), Authen::SASL (its AUTH); sasl2-bin + libsasl2-modules-db give the smarthost
# Postfix in the outbound AUTH test its sasldb.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# chromium, chromium-driver: the web console test drives a headless Chromium through
# chromedriver (WebDriver over plain HTTP, no Selenium needed).
# debhelper, lintian, fakeroot: `make deb` and its test (lintian must pass without errors).
# slapd: the rcpt_verify tests start their own slapd with their own config;
# the package's own directory is not used (no domain asked for).
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
ensure_user
# rabbitmq-server: the event stream's tests start their own broker on a
# loopback address; the package's service listens on every address (5672)
# and would take the port, so it is stopped and left off where it started
if command -v systemctl >/dev/null && systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
  echo "deps: stopping and disabling the system rabbitmq-server (the tests start their own)"
  $SUDO systemctl disable --now rabbitmq-server || true
fi
