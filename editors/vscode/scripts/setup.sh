#!/usr/bin/env bash
# Idempotent install of everything the VS Code end-to-end test needs:
#   Debian: chromium (the browser playwright drives), libkrb5-dev (code-server's native build),
#           ripgrep (pre-fills @vscode/ripgrep's download cache; nothing may be downloaded here);
#   npm:    the extension's own dependencies (npm ci), code-server 4.100.3 and playwright-core,
#           the last two into a cache prefix kept between runs.
# Usage: editors/vscode/scripts/setup.sh        (prints the cache prefix on its last line)
# Env:   HANDOFF_E2E_CACHE  where code-server and playwright-core live (default ~/.cache/handoff-e2e)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXT_DIR="$(dirname "$HERE")"
CACHE="${HANDOFF_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/handoff-e2e}"
CODE_SERVER_VERSION="4.100.3"
PLAYWRIGHT_VERSION="1.64.1"
RIPGREP_VSCODE_TAG="v13.0.0-10"   # what @vscode/ripgrep (code-server 4.100.3's) downloads

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# --- Debian packages -------------------------------------------------------------------------
need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || need_apt+=(libkrb5-dev)
command -v rg >/dev/null 2>&1 || need_apt+=(ripgrep)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
command -v node >/dev/null || { echo "setup: node (20+) is required" >&2; exit 1; }

# --- the extension's own dependencies ---------------------------------------------------------
if [ ! -f "$EXT_DIR/node_modules/.package-lock.json" ] \
   || ! cmp -s "$EXT_DIR/package-lock.json" "$EXT_DIR/node_modules/.handoff-lock-copy"; then
  log "npm ci in editors/vscode"
  (cd "$EXT_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
  cp "$EXT_DIR/package-lock.json" "$EXT_DIR/node_modules/.handoff-lock-copy"
fi

# --- code-server ------------------------------------------------------------------------------
mkdir -p "$CACHE"
CS_PREFIX="$CACHE/code-server-$CODE_SERVER_VERSION"
CS_BIN="$CS_PREFIX/node_modules/.bin/code-server"
if [ ! -x "$CS_BIN" ] || [ ! -f "$CS_PREFIX/.complete" ]; then
  log "installing code-server $CODE_SERVER_VERSION into $CS_PREFIX (about 2 minutes)"
  rm -rf "$CS_PREFIX"
  tmp="$(mktemp -d)"
  # @vscode/ripgrep's postinstall would download a musl build; give it Debian's rg instead.
  mkdir -p "$tmp/rg"
  cp "$(command -v rg)" "$tmp/rg/rg"
  # The cache folder is named after the @vscode/ripgrep version; fill it for every 1.15+ release.
  for ver in 1.15.9 1.15.10 1.15.11 1.15.13 1.15.14 1.17.0 1.17.1 1.18.0; do
    mkdir -p "$tmp/vscode-ripgrep-cache-$ver"
    tar -czf "$tmp/vscode-ripgrep-cache-$ver/ripgrep-$RIPGREP_VSCODE_TAG-x86_64-unknown-linux-musl.tar.gz" -C "$tmp/rg" rg
  done
  (
    export TMPDIR="$tmp" npm_config_unsafe_perm=true npm_config_nodedir=/usr npm_config_yes=true
    # A local install, not -g: code-server's postinstall runs a nested `npm install` in
    # lib/vscode (a package also named "code-server"), which under -g would overwrite the outer one.
    mkdir -p "$CS_PREFIX"
    cd "$CS_PREFIX"
    echo '{"private":true}' >package.json
    npm install --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION" >&2
  )
  rm -rf "$tmp"
  "$CS_BIN" --version >/dev/null
  touch "$CS_PREFIX/.complete"
fi

# --- playwright-core (driver only; the browser is Debian's chromium) ---------------------------
PW_PREFIX="$CACHE/playwright-$PLAYWRIGHT_VERSION"
if [ ! -f "$PW_PREFIX/node_modules/playwright-core/package.json" ]; then
  log "installing playwright-core $PLAYWRIGHT_VERSION into $PW_PREFIX"
  mkdir -p "$PW_PREFIX"
  (cd "$PW_PREFIX" && [ -f package.json ] || echo '{"private":true}' >package.json)
  (cd "$PW_PREFIX" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund \
     --loglevel=error "playwright-core@$PLAYWRIGHT_VERSION" >&2)
fi

log "ready: code-server $("$CS_BIN" --version | head -1), playwright-core $PLAYWRIGHT_VERSION, $(/usr/bin/chromium --version 2>/dev/null)"
echo "$CACHE"
