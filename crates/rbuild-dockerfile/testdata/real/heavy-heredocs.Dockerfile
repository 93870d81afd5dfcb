# syntax=docker/dockerfile:1
FROM ubuntu:24.04 AS base

RUN <<EOT bash
  set -euo pipefail
  apt-get update
  apt-get install -y --no-install-recommends \
    python3 python3-venv nginx
  rm -rf /var/lib/apt/lists/*
EOT

COPY --chmod=0755 <<'EOF' /usr/local/bin/entrypoint.sh
#!/bin/sh
set -e
echo "starting with $APP_ENV"
exec "$@"
EOF

COPY <<-NGINX /etc/nginx/conf.d/default.conf
	server {
		listen 80;
		location / { proxy_pass http://127.0.0.1:8000; }
	}
	NGINX

RUN <<EOF python3
import json, pathlib
pathlib.Path("/etc/app.json").write_text(json.dumps({"env": "prod"}))
EOF

RUN cat <<CONF > /etc/app.conf && cat <<'VARS' >> /etc/app.env
listen = 8000
CONF
APP_HOME=$HOME
VARS

ONBUILD COPY <<EOF /onbuild.txt
added when used as a base
EOF

FROM base
ENV APP_ENV=production
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["python3", "-m", "http.server", "8000"]
