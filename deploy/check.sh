#!/usr/bin/env bash
# Checks what can be checked of deploy/ and nginx/ without a Docker engine or a cluster:
#   nginx/nginx.conf           nginx -t (the suite also runs it in front of two nodes)
#   deploy/docker-compose.yml  parsed; services, node environments and dependencies checked
#   deploy/k8s/*.yaml          kubernetes-validate --strict (schemas of Kubernetes 1.37, from PyPI)
#   deploy/switchyard.service  systemd-analyze verify (with the binary path stubbed)
# Not exercised: building the image, starting the compose stack, applying the manifests.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
say() { echo "[deploy/check] $*"; }

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p "$WORK/nginx/tmp" "$WORK/nginx/tls" && cp "$ROOT/nginx/nginx.conf" "$WORK/nginx/"
# A throwaway certificate for the HTTPS listener (an operator supplies their own).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$WORK/nginx/tls/server.key" -out "$WORK/nginx/tls/server.crt" 2>/dev/null
"$NGINX" -p "$WORK/nginx/" -c nginx.conf -t 2>&1 | tail -n 1
say "nginx/nginx.conf: ok"

python3 - "$ROOT/deploy/docker-compose.yml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
s = d["services"]
for need in ["postgres", "redis", "jaeger", "nginx", "node1", "node2", "node3"]:
    assert need in s, f"service {need} missing"
ids = set()
for n in ["node1", "node2", "node3"]:
    env = s[n]["environment"]
    for key in ["SWITCHYARD__DATABASE__URL", "SWITCHYARD__REDIS__URL", "SWITCHYARD__SECURITY__MASTER_KEY"]:
        assert key in env, f"{n}: {key} missing"
    ids.add(env["SWITCHYARD__SERVER__NODE_ID"])
    assert env.get("SWITCHYARD__TELEMETRY__OTLP_ENDPOINT") == "http://jaeger:4317", f"{n}: traces must go to Jaeger"
    assert set(s[n]["depends_on"]) == {"postgres", "redis", "jaeger"}, n
assert s["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true", "Jaeger must accept OTLP"
assert len(ids) == 3, "node ids must differ"
PY
say "deploy/docker-compose.yml: ok"

python3 -m venv "$WORK/venv" >/dev/null
"$WORK/venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate >/dev/null
"$WORK/venv/bin/kubernetes-validate" --strict --quiet "$ROOT"/deploy/k8s/*.yaml
say "deploy/k8s: ok"

if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir -p "$WORK/bin" && printf '#!/bin/sh\n' >"$WORK/bin/switchyard" && chmod +x "$WORK/bin/switchyard"
  sed "s|/usr/local/bin/switchyard|$WORK/bin/switchyard|" "$ROOT/deploy/switchyard.service" >"$WORK/switchyard.service"
  out=$(systemd-analyze verify "$WORK/switchyard.service" 2>&1 || true)
  if echo "$out" | grep -v -E 'Failed to connect|system bus|bus:|^$' | grep -q .; then
    echo "$out"; exit 1
  fi
  say "deploy/switchyard.service: ok"
fi
