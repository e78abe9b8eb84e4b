#!/usr/bin/env bash
# System prerequisites of the local stack, checked on every `make install` (cheap when present):
# Java 17+ and Maven (the Kafka broker, resolved from Maven Central), the PostgreSQL server
# binaries (initdb/pg_ctl), kcat (optional, a Kafka client we did not write), Chromium and its
# driver (for the browser tests of /docs and the web console; optional to run the stack), Go
# (builds toxiproxy, the fault tests' network proxy: `python -m dev.toxiproxy install`).
# Missing ones are installed with apt when we can (root on Debian/Ubuntu); otherwise we say what
# to install.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1; }

java_major() {
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -1 |
        awk '{ print ($1 == 1 ? $2 : $1) }'
}

pg_bindir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    done
    have pg_config && [ -x "$(pg_config --bindir)/initdb" ] && { pg_config --bindir; return; }
    have initdb && dirname "$(command -v initdb)"
}

if ! have java || [ "$(java_major)" -lt 17 ]; then missing+=(openjdk-17-jre-headless); fi
have mvn || missing+=(maven)
[ -n "$(pg_bindir)" ] || missing+=(postgresql)
have kcat || missing+=(kcat)
have openssl || missing+=(openssl)  # self-signed certificates of the TLS test
# Headless Chromium and its driver: the browser tests (selenium drives them).
have chromium || missing+=(chromium)
have chromedriver || missing+=(chromium-driver)
have go || [ -x /usr/local/go/bin/go ] || missing+=(golang-go)
optional=" kcat chromium chromium-driver golang-go "
required=()
for package in "${missing[@]}"; do
    [[ "$optional" == *" $package "* ]] || required+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
    if have apt-get && [ "$(id -u)" -eq 0 ]; then
        echo "installing with apt: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        if [ ${#required[@]} -gt 0 ]; then
            apt-get install -y -qq --no-install-recommends "${required[@]}" >/dev/null
        fi
        # The optional ones must not stop the install on a distribution without them.
        for package in "${missing[@]}"; do
            [[ "$optional" == *" $package "* ]] || continue
            apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1 ||
                echo "note: $package not available from apt (optional)"
        done
    else
        echo "missing system packages: ${missing[*]}" >&2
        echo "install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), then re-run." >&2
        echo "needed: Java 17+ and Maven for the Kafka broker, the PostgreSQL server;" >&2
        echo "optional: kcat, chromium + chromium-driver for the /docs browser test, golang-go" >&2
        echo "for toxiproxy (the fault tests' network proxy)." >&2
        [ ${#required[@]} -eq 0 ] || exit 1
    fi
fi

if [ "$(java_major)" -lt 17 ]; then
    echo "Java 17+ is required for Kafka 4 (found: $(java -version 2>&1 | head -1))" >&2
    exit 1
fi
