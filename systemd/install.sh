#!/usr/bin/env bash
# Install trading-engine as a systemd service (systemd/README.md):
#
#   sudo systemd/install.sh [options] [SOURCE_DIR]
#
#   --cpu N           the engine's core for a new config's [server] cpu (default: 1 on a host with
#                     two or more CPUs, else none); an existing config's cpu is kept
#   --helper-cpus L   extra cores for the unit's CPUAffinity (admin password checks, snapshot writer),
#                     e.g. "2 3"; the engine's own core always comes from [server] cpu
#   --venv DIR        use this virtualenv, with trading-engine already installed in it (no pip install)
#   --root DIR        install under DIR instead of / (packaging, tests): no user, no chown, no systemctl
#   --no-start        install and check, but do not enable or start the service
#
# On a first install it writes /etc/trading-engine/config.toml from the demo config with generated
# secrets (each account's in an owner-only secret_file, the operator's password hashed, the password
# itself in /etc/trading-engine/secrets/admin.password, root only) and prints where they are. It never
# overwrites a config, and refuses to start the service on one that still holds demo secrets.
set -euo pipefail

die() { echo "install.sh: $*" >&2; exit 1; }

cpu=default helper_cpus="" venv="" root="" start=1 src=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpu="${2:?--cpu N}"; shift 2 ;;
        --helper-cpus) helper_cpus="${2?--helper-cpus LIST}"; shift 2 ;;
        --venv) venv="${2:?--venv DIR}"; shift 2 ;;
        --root) root="${2:?--root DIR}"; shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (--help)" ;;
        *) [ -z "$src" ] || die "one SOURCE_DIR only"; src="$1"; shift ;;
    esac
done
src="${src:-$(cd "$(dirname "$0")/.." && pwd)}"
[ -f "$src/pyproject.toml" ] && [ -f "$src/engine/default_config.toml" ] || die "$src is not a trading-engine source tree"
[ -n "$root" ] && root="$(mkdir -p "$root" && cd "$root" && pwd)"
[ -n "$root" ] && start=0
[ -z "$root" ] && [ "$(id -u)" != 0 ] && die "run as root (sudo), or use --root DIR"

# -- prerequisites, each with what to do about it --
PYTHON="${PYTHON:-python3}"
if [ -z "$venv" ]; then
    command -v "$PYTHON" >/dev/null || die "no $PYTHON: install Python 3.11 or newer (or set PYTHON=/path/to/python3.11)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "$PYTHON is $("$PYTHON" -V 2>&1 || echo 'not runnable'): trading-engine needs Python 3.11 or newer (set PYTHON=...)"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || die "$PYTHON cannot make a virtualenv: install its venv module (Debian/Ubuntu: apt-get install python3-venv)"
    include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    [ -f "$include/Python.h" ] \
        || die "no Python headers ($include/Python.h): install them (Debian/Ubuntu: apt-get install python3-dev; RHEL: python3-devel)"
    compiler="${CC:-$(command -v cc || command -v gcc || echo cc)}"
    command -v "${compiler%% *}" >/dev/null \
        || die "no C compiler (${CC:+CC=}$compiler): install one (Debian/Ubuntu: apt-get install build-essential; RHEL: gcc)"
else
    [ -x "$venv/bin/trading-engine" ] || die "--venv $venv: no bin/trading-engine in it (pip install trading-engine there first)"
fi
if [ "$start" = 1 ]; then
    command -v systemctl >/dev/null || die "no systemctl: this host does not run systemd (use --no-start, or --root)"
fi

opt="$root/opt/trading-engine" etc="$root/etc/trading-engine" unitdir="$root/etc/systemd/system"
owner=1                                  # chown to the service user (not under --root)
[ -n "$root" ] && owner=0

if [ "$owner" = 1 ]; then
    id trading-engine >/dev/null 2>&1 \
        || useradd --system --home-dir /var/lib/trading-engine --shell /usr/sbin/nologin trading-engine
fi

# -- the package, and the command on operators' PATH --
install -d -m 0755 "$opt"
if [ -z "$venv" ]; then
    venv="$opt/venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --upgrade pip
    "$venv/bin/pip" install "$src"
fi
venv_run="${venv#"$root"}"               # where the venv is on the running system
install -m 0644 "$src/README.md" "$opt/README.md"
install -d -m 0755 "$root/usr/local/bin"
ln -sfn "$venv_run/bin/trading-engine" "$root/usr/local/bin/trading-engine"

# -- the config: a first install gets generated secrets, never the demo ones --
install -d -m 0750 "$etc"
[ "$owner" = 1 ] && chgrp trading-engine "$etc"
config="$etc/config.toml"
if [ ! -f "$config" ]; then
    if [ "$cpu" = default ]; then
        cpu=""
        [ "$(nproc)" -ge 2 ] && cpu=1
    fi
    install -d -m 0750 "$etc/secrets"
    [ "$owner" = 1 ] && chgrp trading-engine "$etc/secrets"
    "$venv/bin/python" - "$src/engine/default_config.toml" "$config" "$etc/secrets" "${etc#"$root"}/secrets" \
        "$cpu" "$owner" <<'PY'
"""The demo config with each demo secret replaced by a generated one in an owner-only file."""
import os, re, secrets, shutil, sys
from engine.admin import hash_password

demo, out, secrets_dir, secrets_run, cpu, owner = sys.argv[1:]
text = open(demo).read()
text = "# Written by systemd/install.sh from the demo config, each demo secret replaced by a generated one.\n" \
    + text[text.index("\n[server]"):]                       # the demo's header comment: not true here
text = re.sub(r'(?m)^path = .*$', 'path = "/var/lib/trading-engine/journal"', text, count=1)
if cpu:
    text = re.sub(r'(?m)^\[server\]\n', f'[server]\ncpu = {int(cpu)}                   # the engine\'s core: after changing it, run '
                  'install.sh again (it writes the unit\'s CPUAffinity from it)\n', text, count=1)


def secret_file(name, value, service_readable):
    path = os.path.join(secrets_dir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    if owner == "1" and service_readable:
        shutil.chown(path, "trading-engine", "trading-engine")
    return os.path.join(secrets_run, name)


out_lines, name, written = [], None, []
for line in text.splitlines(keepends=True):
    m = re.match(r'name = "([^"]+)"', line)
    if m:
        name = m.group(1)
    if line.startswith("demo_secret = "):
        path = secret_file(f"{name}.secret", secrets.token_urlsafe(32), True)
        written.append(f"account {name}: {path}")
        line = f'secret_file = "{path}"\n'
    elif line.startswith("password_env = "):
        password = secrets.token_urlsafe(24)
        path = secret_file(f"{name}.password", password, False)
        written.append(f"operator {name} (admin listener) password: {path} (root only)")
        line = f'password_scrypt = "{hash_password(password)}"\n'
    elif line.startswith("demo_password = "):
        continue
    elif line == "[[admins]]\n":
        while out_lines and out_lines[-1].startswith("#"):   # the demo operator's comment
            out_lines.pop()
    out_lines.append(line)
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
with os.fdopen(fd, "w") as f:
    f.write("".join(out_lines))
print(f"install.sh: wrote {out} with generated secrets:\n  " + "\n  ".join(written))
PY
    [ "$owner" = 1 ] && chgrp trading-engine "$config"
    echo "install.sh: edit $config (symbols, accounts, limits) before real use"
fi

# -- check the config with the engine's own loader; derive the unit's CPUAffinity from [server] cpu --
checked="$("$venv/bin/python" - "$config" <<'PY'
import sys
from engine import config
try:
    cfg = config.load(sys.argv[1])
except config.ConfigError as e:
    sys.exit(f"install.sh: {e}")
demo = [f"account {a.name} (demo_secret)" for a in cfg.accounts if a.demo_secret is not None] + \
       [f"operator {a.name} (demo_password)" for a in cfg.admins if a.demo_password is not None]
print("demo:" + "; ".join(demo) if demo else "ok")
print("" if cfg.server.cpu is None else cfg.server.cpu)
PY
)" || die "the config $config does not load (above)"
verdict="$(sed -n 1p <<<"$checked")" engine_cpu="$(sed -n 2p <<<"$checked")"

affinity="$(echo "$engine_cpu $helper_cpus" | xargs)"
install -d -m 0755 "$unitdir"
sed -e "s#/opt/trading-engine/venv#$venv_run#g" \
    -e "s#^CPUAffinity=.*#${affinity:+CPUAffinity=$affinity}#" \
    "$src/systemd/trading-engine.service" > "$unitdir/trading-engine.service"
chmod 0644 "$unitdir/trading-engine.service"
echo "install.sh: unit $unitdir/trading-engine.service (CPUAffinity=${affinity:-unset: [server] cpu is not set})"

if [ "$verdict" != ok ]; then
    echo "install.sh: REFUSING to start: $config holds demo secrets: ${verdict#demo:}." >&2
    echo "install.sh: give each account a secret_file (mode 0600, owner trading-engine) or secret_env, and each" >&2
    echo "install.sh: operator a password_scrypt (trading-engine admin hash); then run install.sh again." >&2
    exit 1
fi
if [ "$start" = 1 ]; then
    systemctl daemon-reload
    systemctl enable --now trading-engine
    systemctl --no-pager status trading-engine
else
    echo "install.sh: not started (--no-start or --root); start with: systemctl enable --now trading-engine"
fi
