#!/usr/bin/env bash
# System prerequisites of the local stack, checked on every `make install` (cheap when present):
# Java 17+ and Maven (the Kafka broker, resolved from Maven Central), the PostgreSQL server
# binaries (initdb/pg_ctl), kcat (optional, a Kafka client we did not write). Missing ones are
# installed with apt when we can (root on Debian/Ubuntu); otherwise we say what to install.
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

if [ ${#missing[@]} -gt 0 ]; then
    if have apt-get && [ "$(id -u)" -eq 0 ]; then
        echo "installing with apt: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # kcat is optional: a distribution without it must not stop the install.
        apt-get install -y -qq --no-install-recommends "${missing[@]/kcat/}" >/dev/null
        if [[ " ${missing[*]} " == *" kcat "* ]]; then
            apt-get install -y -qq --no-install-recommends kcat >/dev/null 2>&1 ||
                echo "note: kcat not available from apt (optional)"
        fi
    else
        echo "missing system packages: ${missing[*]}" >&2
        echo "install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), then re-run." >&2
        echo "needed: Java 17+ and Maven for the Kafka broker, the PostgreSQL server." >&2
        [[ " ${missing[*]} " == " kcat " ]] || exit 1
    fi
fi

if [ "$(java_major)" -lt 17 ]; then
    echo "Java 17+ is required for Kafka 4 (found: $(java -version 2>&1 | head -1))" >&2
    exit 1
fi
