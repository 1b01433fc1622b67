# Shared setup of scripts/test and scripts/demo: the tools a fresh machine needs (sourced, not run).
# shellcheck shell=bash

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
say() {
  if [ -t 2 ]; then printf '\033[1m[onevoice]\033[0m %s\n' "$*" >&2; else printf '[onevoice] %s\n' "$*" >&2; fi
}
is_root() { [ "$(id -u)" -eq 0 ]; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- uv -----------------------------------------------------------------------
export PATH="$HOME/.local/bin:$PATH"
if command -v uv >/dev/null 2>&1; then
  UV=(uv)
else
  say "uv not found: installing it with pip"
  if ! python3 -m pip --version >/dev/null 2>&1 && is_root; then
    apt_install python3-pip
  fi
  python3 -m pip install --quiet uv \
    || python3 -m pip install --quiet --user --break-system-packages uv   # Debian's PEP 668 guard
  if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
fi

# --- Java + Maven (the Kafka broker) --------------------------------------------
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  if is_root; then
    say "java/mvn missing: installing openjdk-17-jre-headless and maven"
    apt_install openjdk-17-jre-headless maven
  else
    say "WARNING: java and mvn are needed for the Kafka broker (not root: not installing them)"
  fi
fi

