#!/usr/bin/env bash
# Install trading-engine as a systemd service: sudo systemd/install.sh [SOURCE_DIR]
set -euo pipefail
src="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
id trading-engine >/dev/null 2>&1 || useradd --system --home-dir /var/lib/trading-engine --shell /usr/sbin/nologin trading-engine
install -d -m 0755 /opt/trading-engine
python3 -m venv /opt/trading-engine/venv
/opt/trading-engine/venv/bin/pip install --upgrade pip
/opt/trading-engine/venv/bin/pip install "$src"
install -m 0644 "$src/README.md" /opt/trading-engine/README.md
install -d -m 0750 -o root -g trading-engine /etc/trading-engine
if [ ! -f /etc/trading-engine/config.toml ]; then
    # start from the demo config, journal in the state directory; edit symbols, accounts and secrets
    sed 's#^path = .*#path = "/var/lib/trading-engine/journal"#' "$src/engine/default_config.toml" \
        > /etc/trading-engine/config.toml
    chmod 0640 /etc/trading-engine/config.toml
    chgrp trading-engine /etc/trading-engine/config.toml
fi
install -m 0644 "$src/systemd/trading-engine.service" /etc/systemd/system/trading-engine.service
systemctl daemon-reload
systemctl enable --now trading-engine
systemctl --no-pager status trading-engine
