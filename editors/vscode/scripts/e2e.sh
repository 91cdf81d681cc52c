#!/usr/bin/env bash
# End-to-end test of the VS Code extension in real VS Code (code-server) driven by playwright-core
# in Debian's chromium, against the real `handoff-lsp` and a command agent (no model needed).
#
#   editors/vscode/scripts/e2e.sh        exit 0 and "E2E OK" on success
#
# Env: HANDOFF_LSP      the server executable (default: <repo>/.venv/bin/handoff-lsp)
#      E2E_WORK         work folder (default: a new /tmp/handoff-e2e.XXXXXX; kept for inspection)
#      E2E_SKIP_SETUP=1 do not run setup.sh first (it is idempotent and quick when warm)
#      E2E_TIMEOUT_SCALE multiply every wait (default 1)
#      E2E_DRIVER_TIMEOUT the browser part's hard limit in seconds (default 420)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXT_DIR="$(dirname "$HERE")"
ROOT="$(cd "$EXT_DIR/../.." && pwd)"
HANDOFF_LSP="${HANDOFF_LSP:-$ROOT/.venv/bin/handoff-lsp}"
log() { printf '[e2e.sh %(%H:%M:%S)T] %s\n' -1 "$*"; }

# --- tools ----------------------------------------------------------------------------------------
if [ "${E2E_SKIP_SETUP:-0}" != 1 ]; then
  CACHE="$(bash "$HERE/setup.sh" | tail -n 1)"
else
  CACHE="${HANDOFF_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/handoff-e2e}"
fi
CODE_SERVER="$( (ls -d "$CACHE"/code-server-*/node_modules/.bin/code-server 2>/dev/null || true) | sort -V | tail -n 1)"
PLAYWRIGHT_CORE="$( (ls -d "$CACHE"/playwright-*/node_modules/playwright-core 2>/dev/null || true) | sort -V | tail -n 1)"
[ -n "$CODE_SERVER" ] && [ -x "$CODE_SERVER" ] || { echo "E2E FAILED: code-server not found under $CACHE (run setup.sh)"; exit 1; }
[ -n "$PLAYWRIGHT_CORE" ] || { echo "E2E FAILED: playwright-core not found under $CACHE (run setup.sh)"; exit 1; }
if ! version="$("$HANDOFF_LSP" --version 2>&1)"; then
  echo "E2E FAILED: the language server does not run: $HANDOFF_LSP --version said:"
  echo "$version"
  exit 1
fi
log "server: $HANDOFF_LSP ($version)"

WORK="${E2E_WORK:-$(mktemp -d /tmp/handoff-e2e.XXXXXX)}"
mkdir -p "$WORK"/{home,user-data/User,extensions,state,logs,screenshots}
log "work folder: $WORK"

# --- build and package the extension (type check, esbuild bundle via vsce's prepublish) -----------
log "packaging the extension"
VSIX="$WORK/handoff.vsix"
(cd "$EXT_DIR" && npm run --silent typecheck && npx --no-install vsce package --no-dependencies --out "$VSIX") \
  >"$WORK/logs/package.log" 2>&1 \
  || { cat "$WORK/logs/package.log"; echo "E2E FAILED: packaging the extension failed"; exit 1; }

# --- a private world: HOME, VS Code profile, state dir, sample repository -------------------------
export HOME="$WORK/home"
export HANDOFF_STATE_DIR="$WORK/state"
export GIT_AUTHOR_NAME=Dev GIT_AUTHOR_EMAIL=dev@example.invalid
export GIT_COMMITTER_NAME=Dev GIT_COMMITTER_EMAIL=dev@example.invalid GIT_CONFIG_NOSYSTEM=1
unset HANDOFF_MODEL HANDOFF_API_BASE HANDOFF_API_KEY

REPO="$WORK/project"
mkdir -p "$REPO"
cat >"$REPO/app.py" <<'PY'
def add(a, b):
    return a + b


def sub(a, b):
    return a - b
PY
# The command agent: waits a little (so "running" is visible), then edits app.py deterministically.
cat >"$WORK/agent.py" <<'PY'
import os
import pathlib
import sys
import time

path = pathlib.Path("app.py")
text = path.read_text()
if "comment both results" in os.environ.get("HANDOFF_TASK", "").lower():
    # The second session (the lightbulb's, on a bare selection): two changes, reviewed one by one.
    text = text.replace("    return a + b\n", "    return a + b  # sum\n")
    text = text.replace("    return a - b\n", "    return a - b  # difference\n")
    path.write_text(text)
    print("commented both results")
    sys.exit(0)
time.sleep(3)
text = text.replace(
    "def add(a, b):\n    return a + b\n",
    'def add(a, b):\n    """Return the sum of two integers."""\n'
    "    if not isinstance(a, int) or not isinstance(b, int):\n"
    '        raise TypeError("add() takes integers")\n'
    "    return a + b\n",
)
path.write_text(text)
print("checked the arguments")
print("add() now rejects non-integers")
PY
cat >"$REPO/.handoff.toml" <<TOML
agent = "edit"

[agents.edit]
command = ["python3", "$WORK/agent.py"]

# the same program under another name: chosen with "Handoff: Choose Agent..." before delegating
[agents.careful]
command = ["python3", "$WORK/agent.py"]
TOML
cat >"$REPO/.gitignore" <<'EOF2'
__pycache__/
EOF2
git -C "$REPO" init -q -b main
git -C "$REPO" add -A
git -C "$REPO" commit -q -m initial
# the developer trusts the repository's Handoff settings (its agent runs a program), as typed
(cd "$REPO" && "$(dirname "$HANDOFF_LSP")/handoff" trust >/dev/null)

MEANWHILE="# edited while the agent worked"
cat >"$WORK/expected.py" <<PY
def add(a, b):
    """Return the sum of two integers."""
    if not isinstance(a, int) or not isinstance(b, int):
        raise TypeError("add() takes integers")
    return a + b


def sub(a, b):
    return a - b
$MEANWHILE
PY

# After the inline review: the first change of the second session accepted, the other rejected.
sed 's/^    return a + b$/    return a + b  # sum/' "$WORK/expected.py" >"$WORK/expected-review.py"

SERVER_LOG="$WORK/logs/server.log"
server_args='[]'
if "$HANDOFF_LSP" --help 2>/dev/null | grep -q -- '--log-file'; then
  server_args="[\"--log-file\", \"$SERVER_LOG\"]"
fi
cat >"$WORK/user-data/User/settings.json" <<JSON
{
  "files.autoSave": "off",
  "workbench.startupEditor": "none",
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false,
  "extensions.ignoreRecommendations": true,
  "workbench.tips.enabled": false,
  "workbench.enableExperiments": false,
  "window.restoreWindows": "none",
  "editor.minimap.enabled": false,
  "chat.commandCenter.enabled": false,
  "handoff.maxSteps": 7,
  "handoff.todo.autoTrigger": false,
  "handoff.server.path": "$HANDOFF_LSP",
  "handoff.server.args": $server_args
}
JSON

CS_ARGS=(--user-data-dir "$WORK/user-data" --extensions-dir "$WORK/extensions")
log "installing $VSIX into code-server"
"$CODE_SERVER" "${CS_ARGS[@]}" --install-extension "$VSIX" --force >"$WORK/logs/install.log" 2>&1 \
  || { cat "$WORK/logs/install.log"; echo "E2E FAILED: could not install the .vsix"; exit 1; }

# --- start code-server in its own process group ----------------------------------------------------
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
CS_LOG="$WORK/logs/code-server.log"
setsid "$CODE_SERVER" "${CS_ARGS[@]}" --auth none --bind-addr "127.0.0.1:$PORT" \
  --disable-telemetry --disable-update-check --disable-workspace-trust --disable-getting-started-override \
  "$REPO" >"$CS_LOG" 2>&1 &
CS_PID=$!
stop_code_server() {
  if kill -0 "$CS_PID" 2>/dev/null; then
    kill -TERM -- "-$CS_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$CS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$CS_PID" 2>/dev/null || true
  fi
}
DRIVER_PID=""
stop_driver() {
  # The driver's browser runs in its own process group (playwright launches it detached).
  # The driver gets a few seconds to take a screenshot and close it; then whatever is left goes.
  if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    local children
    children="$(ps -o pid= --ppid "$DRIVER_PID" 2>/dev/null || true)"
    kill -TERM "$DRIVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DRIVER_PID" 2>/dev/null || true
    for child in $children; do
      kill -KILL -- "-$child" 2>/dev/null || kill -KILL "$child" 2>/dev/null || true
    done
  fi
}
cleanup() { stop_driver; stop_code_server; }
diagnostics() {
  echo "================ diagnostics ================"
  echo "--- server log ($SERVER_LOG) ---"
  tail -n 200 "$SERVER_LOG" 2>/dev/null || echo "(none)"
  local f
  for f in $(find "$WORK/user-data/logs" -name '*Handoff*.log' 2>/dev/null); do
    echo "--- output channel Handoff ($f) ---"
    tail -n 200 "$f"
  done
  for f in $(find "$WORK/user-data/logs" \( -name 'exthost.log' -o -name 'remoteexthost.log' \) 2>/dev/null); do
    echo "--- extension host ($f) ---"
    tail -n 80 "$f"
  done
  echo "--- code-server log ($CS_LOG) ---"
  tail -n 80 "$CS_LOG"
  echo "--- screenshots: $WORK/screenshots ---"
  ls "$WORK/screenshots"
}
trap cleanup EXIT
trap 'echo "E2E FAILED: interrupted"; cleanup; diagnostics; exit 143' TERM INT
log "code-server pid $CS_PID on 127.0.0.1:$PORT (log $CS_LOG)"

healthy=0
for _ in $(seq 1 1200); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then healthy=1; break; fi
  kill -0 "$CS_PID" 2>/dev/null || { cat "$CS_LOG"; echo "E2E FAILED: code-server exited"; exit 1; }
  sleep 0.1
done
[ "$healthy" = 1 ] || { cat "$CS_LOG"; echo "E2E FAILED: code-server did not answer on port $PORT within 120 s"; exit 1; }

# --- drive it ---------------------------------------------------------------------------------------
# In the background, so a TERM reaches our trap at once (bash defers traps while a foreground
# child runs); the loop enforces the hard limit.
DRIVER_LIMIT="${E2E_DRIVER_TIMEOUT:-420}"
PLAYWRIGHT_CORE="$PLAYWRIGHT_CORE" E2E_URL="http://127.0.0.1:$PORT" E2E_REPO="$REPO" \
  E2E_SCREENSHOTS="$WORK/screenshots" E2E_EXPECTED_FILE="$WORK/expected.py" \
  E2E_EXPECTED_REVIEW_FILE="$WORK/expected-review.py" E2E_REVIEW_INSTRUCTION="Comment both results" \
  E2E_INSTRUCTION="Reject arguments that are not integers" E2E_MEANWHILE="$MEANWHILE" \
  E2E_CHOOSE_AGENT=careful E2E_MISSING_AGENT=goose \
  node "$HERE/e2e-driver.js" &
DRIVER_PID=$!
started=$SECONDS
while kill -0 "$DRIVER_PID" 2>/dev/null; do
  if [ $((SECONDS - started)) -ge "$DRIVER_LIMIT" ]; then
    echo "E2E FAILED: the driver ran past $DRIVER_LIMIT s; stopping it"
    stop_driver
    break
  fi
  sleep 0.5
done
set +e
wait "$DRIVER_PID"
rc=$?
set -e
DRIVER_PID=""

stop_code_server
if [ "$rc" -ne 0 ]; then
  diagnostics
  echo "E2E FAILED (exit $rc); work folder kept: $WORK"
  exit "$rc"
fi
# Keep what tells the story (screenshots, logs, the project); drop the editor's profile.
rm -rf "$WORK/extensions" "$WORK/user-data" "$WORK/home" "$VSIX"
log "screenshots in $WORK/screenshots"
echo "E2E PASSED"
