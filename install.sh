#!/usr/bin/env bash
# Set up an aienv node on this machine: system packages, a virtualenv holding
# aienv, the `aienv` command on PATH, and a systemd service that runs the node.
# Safe to run again: every step checks what is already there.
#
#   ./install.sh                         install and start the node as a service (none in CI)
#   ./install.sh --run                   install, then run the node in the foreground
#   ./install.sh --skip-system-deps      do not install distribution packages
#   ./install.sh --skip-service-install  do not install the systemd unit
#   ./install.sh --non-interactive       never ask (for scripts and CI)
#   ./install.sh --dev                   editable install with the test tools, the example
#                                        plugin, what the system tests build VMs and images
#                                        from, and Chromium for the web UI tests
#   ./install.sh --no-runtimes           skip Docker, libvirt and qemu (process runtime only)
#   ./install.sh --bench                 also nginx and tc, for scripts/bench (Debian/Ubuntu)
#   ./install.sh --venv DIR              where the virtualenv goes
#   ./install.sh --no-command            leave the `aienv` command on PATH as it is
#   ./install.sh --no-tls                peers reach the node over plain HTTP (TLS is the default)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SKIP_SYSTEM=0 SKIP_SERVICE=0 INTERACTIVE=1 DEV=0 BENCH=0 RUN=0 RUNTIMES=1 VENV="" TLS=1 LINK=1
[ -t 0 ] || INTERACTIVE=0

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --skip-system-deps) SKIP_SYSTEM=1 ;;
    --skip-service-install) SKIP_SERVICE=1 ;;
    --non-interactive) INTERACTIVE=0 ;;
    --dev) DEV=1 ;;
    --bench) BENCH=1 ;;
    --no-runtimes) RUNTIMES=0 ;;
    --run) RUN=1 ;;
    --tls) TLS=1 ;;
    --no-tls) TLS=0 ;;
    --venv) shift; VENV=${1:?--venv needs a folder} ;;
    --no-command) LINK=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
confirm() {
  [ "$INTERACTIVE" -eq 1 ] || return 0
  read -r -p "$1 [Y/n] " answer
  case "$answer" in n|N|no|NO) return 1 ;; *) return 0 ;; esac
}

if [ "$(id -u)" -eq 0 ]; then
  SUDO="" ; ROOT=1
  VENV=${VENV:-/opt/aienv/venv}; BIN_DIR=/usr/local/bin
else
  SUDO=$(command -v sudo || true); ROOT=0
  VENV=${VENV:-$HOME/.local/share/aienv/venv}; BIN_DIR=$HOME/.local/bin
fi

# -- 1. system packages --------------------------------------------------------
if [ "$SKIP_SYSTEM" -eq 0 ]; then
  . /etc/os-release 2>/dev/null || true
  family="${ID:-} ${ID_LIKE:-}"
  if [ "$ROOT" -eq 0 ] && [ -z "$SUDO" ]; then
    die "installing system packages needs root or sudo (or use --skip-system-deps)"
  fi
  case "$family" in
    *debian*|*ubuntu*)
      # bubblewrap: the sandbox process environments run in (docs/security.md)
      # git: a workspace's git projects travel as bundles and are restored with it
      pkgs="python3 python3-venv python3-pip iproute2 curl util-linux ca-certificates bubblewrap git"
      # libvirt-python is built against the installed libvirt
      pkgs="$pkgs gcc pkg-config python3-dev libvirt-dev"
      # the container and VM runtimes: engines are installed, not started (see below)
      [ "$RUNTIMES" -eq 1 ] && pkgs="$pkgs docker.io iptables libvirt-daemon-system \
        libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils"
      # what the system tests build a container image and a VM from, the browser the
      # web UI tests drive (Playwright uses this Chromium; it downloads none), and
      # what the llm-chat example's llama.cpp wheel is built with
      [ "$DEV" -eq 1 ] && pkgs="$pkgs busybox-static linux-image-cloud-$(dpkg --print-architecture) \
        chromium fonts-dejavu-core cmake g++"
      # what a drafted package.json's app runs with (npm start); a Node.js already here,
      # such as NodeSource's (which conflicts with Debian's npm), is kept
      [ "$DEV" -eq 1 ] && ! command -v npm >/dev/null && pkgs="$pkgs nodejs npm"
      # the benchmarks' baseline server; its own service must not start (see below)
      [ "$BENCH" -eq 1 ] && pkgs="$pkgs nginx-light"
      missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
      if [ -n "$missing" ]; then
        say "updating the package lists"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # what apt would do, said before it starts: how many packages, how many bytes
        plan=$(LC_ALL=C $SUDO apt-get install --assume-no --no-install-recommends $missing 2>/dev/null || true)
        # (upgraded packages are downloaded and set up too: they count)
        count=$(printf '%s\n' "$plan" \
          | sed -n 's/^\([0-9]*\) upgraded, \([0-9]*\) newly installed.*/\1 \2/p' \
          | awk '{ print $1 + $2 }')
        fetch=$(printf '%s\n' "$plan" | sed -n 's/^Need to get \([^/]*\).* of archives\.$/\1/p')
        disk=$(printf '%s\n' "$plan" | sed -n 's/^After this operation, \(.*\) of additional disk space.*/\1/p')
        summary=$(echo $missing)
        if [ -n "$count" ]; then
          summary="$count packages (${fetch:-0 B} to download, ${disk:-0 B} on disk) for: $summary"
        fi
        confirm "Install $summary?" || die "cancelled"
        say "installing $summary"
        # no package may start a daemon on this machine's interfaces (nginx would
        # listen on :80; dockerd and libvirtd would add bridges and NAT rules): block
        # service starts for the install unless a policy exists. Start the engines you
        # want yourself: systemctl enable --now docker libvirtd
        guard=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
          printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
          $SUDO chmod 755 /usr/sbin/policy-rc.d; guard=1
        fi
        # one short line per package downloaded, then per package set up (errors pass)
        status=0
        LC_ALL=C $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
          -o Dpkg::Progress-Fancy=0 -o Dpkg::Use-Pty=0 --no-install-recommends $missing \
          | awk -v total="${count:-?}" '
              /^Get:[0-9]+ / { n++; size = $0; sub(/.*\[/, "", size); sub(/\].*/, "", size)
                               printf "  [%d/%s] downloaded %s (%s)\n", n, total, $5, size; fflush() }
              /^Setting up / { m++; name = $3; sub(/:.*/, "", name)
                               printf "  [%d/%s] set up %s\n", m, total, name; fflush() }
              /^(E|W): / { print; fflush() }' || status=$?
        [ "$guard" -eq 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
        [ "$status" -eq 0 ] || die "apt-get install failed (exit $status)"
      fi ;;
    *fedora*|*rhel*|*centos*)
      pkgs="python3 python3-pip iproute curl util-linux bubblewrap git gcc pkgconf-pkg-config python3-devel libvirt-devel"
      [ "$RUNTIMES" -eq 1 ] && pkgs="$pkgs moby-engine iptables libvirt-daemon-driver-qemu \
        libvirt-client qemu-kvm qemu-img"
      missing=$(for p in $pkgs; do rpm -q "$p" >/dev/null 2>&1 || echo "$p"; done)
      if [ -n "$missing" ]; then
        confirm "Install system packages: $(echo $missing)?" || die "cancelled"
        say "installing $(echo $missing)"
        $SUDO dnf install -y -q $missing
      fi ;;
    *) say "unknown distribution '${ID:-?}': skipping system packages (need Python >= 3.11 with venv)" ;;
  esac
fi

# -- 2. the sandbox's account --------------------------------------------------------
# A node running as root runs sandboxed environments as this unprivileged account
# (AIENV_SANDBOX_USER), never as root; a node running as another user needs none.
SANDBOX_USER=${AIENV_SANDBOX_USER:-aienv-sandbox}
if [ "$ROOT" -eq 1 ] && ! id "$SANDBOX_USER" >/dev/null 2>&1; then
  say "creating the account $SANDBOX_USER that sandboxed environments run as"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$SANDBOX_USER"
fi

# The node's admin on this machine: its own user, root and the group aienv
# (AIENV_ADMIN_GROUP); other users of the machine are peers. The user who ran
# install.sh through sudo joins the group (it takes effect at their next login).
ADMIN_GROUP=${AIENV_ADMIN_GROUP:-aienv}
if [ "$ROOT" -eq 1 ]; then
  if ! getent group "$ADMIN_GROUP" >/dev/null; then
    say "creating the group $ADMIN_GROUP, whose members administer the node from this machine"
    groupadd --system "$ADMIN_GROUP"
  fi
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && ! id -nG "$SUDO_USER" | grep -qw "$ADMIN_GROUP"; then
    usermod -aG "$ADMIN_GROUP" "$SUDO_USER"
    say "added $SUDO_USER to the group $ADMIN_GROUP (log in again for it to count)"
  fi
fi

# The service's node runs as this system user, not as root (AIENV_NODE_USER): in the
# admin group, and in docker's, libvirt's and kvm's groups to drive the engines. Its
# unit gives it only the capabilities to run sandboxes as the sandbox's account
# (SETUID, SETGID, CHOWN, KILL) and to manage their files (DAC_OVERRIDE, FOWNER).
NODE_USER=${AIENV_NODE_USER:-aienv}
if [ "$ROOT" -eq 1 ]; then
  if ! id "$NODE_USER" >/dev/null 2>&1; then
    say "creating the system user $NODE_USER that the node's service runs as"
    useradd --system --gid "$ADMIN_GROUP" --no-create-home --home-dir /var/lib/aienv \
      --shell /usr/sbin/nologin "$NODE_USER"
  fi
  for group in docker libvirt kvm; do
    if getent group "$group" >/dev/null && ! id -nG "$NODE_USER" | grep -qw "$group"; then
      usermod -aG "$group" "$NODE_USER"
    fi
  done
fi

# -- 3. the virtualenv and the package ----------------------------------------------
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "aienv needs Python >= 3.11; $("$PYTHON" --version 2>&1) found (set PYTHON=...)"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if [ "$DEV" -eq 1 ]; then
  say "installing aienv from $REPO (editable, with test tools)"
  "$VENV/bin/python" -m pip install -q -e "$REPO[test]"
  "$VENV/bin/python" -m pip install -q -e "$REPO/plugins/aienv-venv"
else
  say "installing aienv from $REPO"
  # with the venv runtime: the jupyterlab and llm-chat examples (and drafted Python
  # projects) run on it
  "$VENV/bin/python" -m pip install -q "$REPO" "$REPO/plugins/aienv-venv"
fi
# The web page's terminal: xterm.js and its fit addon, pinned npm packages fetched
# from the registry and checked against their published sha512 integrity (never kept
# in this repository); the node serves them from the virtualenv's share/aienv/vendor.
VENDOR="$VENV/share/aienv/vendor/xterm"
npm_files() {  # TARBALL-URL INTEGRITY FILE...: files of a pinned npm package into $VENDOR
  local url=$1 integrity=$2 tmp got; shift 2
  tmp=$(mktemp -d)
  if ! curl -fsSL --retry 3 -o "$tmp/package.tgz" "$url"; then
    rm -rf "$tmp"; die "cannot download $url (the web page's terminal needs it)"
  fi
  got=$("$VENV/bin/python" -c 'import base64, hashlib, sys
print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' \
    "$tmp/package.tgz")
  if [ "$got" != "$integrity" ]; then
    rm -rf "$tmp"; die "$url is not the published package (integrity $got, expected $integrity)"
  fi
  tar -xzf "$tmp/package.tgz" -C "$tmp"
  mkdir -p "$VENDOR"
  for file in "$@"; do cp "$tmp/package/$file" "$VENDOR/"; done
  rm -rf "$tmp"
}
XTERM_PINS="@xterm/xterm@5.5.0 @xterm/addon-fit@0.10.0"
if [ "$(cat "$VENDOR/.pins" 2>/dev/null)" != "$XTERM_PINS" ]; then
  say "fetching the page's terminal ($XTERM_PINS) from the npm registry"
  npm_files https://registry.npmjs.org/@xterm/xterm/-/xterm-5.5.0.tgz \
    sha512-hqJHYaQb5OptNunnyAnkHyM8aCjZ1MEIDTQu1iIbbTD/xops91NB5yq1ZK/dC2JDbVWtF23zUtl9JE2NqwT87A== \
    lib/xterm.js css/xterm.css LICENSE
  npm_files https://registry.npmjs.org/@xterm/addon-fit/-/addon-fit-0.10.0.tgz \
    sha512-UFYkDm4HUahf2lnEyHvio51TNGiLK66mqP2JoATy7hRZeXaGMRDr00JiSF7m63vR5WKATF605yEggJKsw0JpMQ== \
    lib/addon-fit.js
  echo "$XTERM_PINS" > "$VENDOR/.pins"
fi
version=$("$VENV/bin/aienv" --version)
if [ "$LINK" -eq 1 ]; then
  mkdir -p "$BIN_DIR"
  ln -sfn "$VENV/bin/aienv" "$BIN_DIR/aienv"
  say "$version installed: $BIN_DIR/aienv"
else
  say "$version installed: $VENV/bin/aienv"
fi

# -- 4. the service --------------------------------------------------------------
# Never in CI: a node would announce itself on the machine's real interfaces.
case "${CI:-}" in true|TRUE|True|1|yes) IN_CI=1 ;; *) IN_CI=0 ;; esac
if [ "$SKIP_SERVICE" -eq 0 ] && [ "$RUN" -eq 0 ]; then
  if [ "$IN_CI" -eq 1 ]; then
    say "CI=$CI: no service installed or started (run a node with 'aienv serve')"
  elif [ -d /run/systemd/system ]; then
    if [ "$ROOT" -eq 1 ]; then
      unit=/etc/systemd/system/aienv.service; ctl="systemctl"; home=/var/lib/aienv; target=multi-user.target
      caps="CAP_SETUID CAP_SETGID CAP_CHOWN CAP_KILL CAP_DAC_OVERRIDE CAP_FOWNER"
      # systemd makes /var/lib/aienv, and gives an existing one (a root node's) to the user
      system_user="User=$NODE_USER
Group=$ADMIN_GROUP
StateDirectory=aienv
StateDirectoryMode=0711
AmbientCapabilities=$caps
CapabilityBoundingSet=$caps
"
    else
      unit=$HOME/.config/systemd/user/aienv.service; ctl="systemctl --user"; home=$HOME/.local/share/aienv; target=default.target
      system_user=""
    fi
    mkdir -p "$(dirname "$unit")"
    cat > "$unit.new" <<UNIT
[Unit]
Description=aienv node: share and clone AI environments on the LAN
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$VENV/bin/aienv serve
Environment=AIENV_HOME=$home
Environment=AIENV_TLS=$TLS
# its own cgroup subtree: the node puts each environment's CPU and memory limits there
# (without it, and not as root, the node cannot limit an environment's memory)
Delegate=yes
${system_user}Restart=on-failure
RestartSec=3
KillMode=mixed
TimeoutStopSec=30

[Install]
WantedBy=$target
UNIT
    if ! cmp -s "$unit.new" "$unit" 2>/dev/null; then
      confirm "Install and start the systemd service $unit?" || { rm -f "$unit.new"; die "cancelled"; }
      mv "$unit.new" "$unit"
      $ctl daemon-reload
    else
      rm -f "$unit.new"
    fi
    $ctl enable --now aienv.service >/dev/null 2>&1 || $ctl restart aienv.service
    say "node running as $unit (logs: ${ctl/systemctl/journalctl} -u aienv -f)"
  else
    say "systemd is not running here: start the node with 'aienv serve' (or ./install.sh --run)"
  fi
fi

if [ "$RUN" -eq 1 ]; then
  say "starting the node (Ctrl-C to stop)"
  AIENV_TLS=$TLS exec "$VENV/bin/aienv" serve
fi
