#!/bin/sh
# The test stage's check, run inside the built image.
set -e
test -x /srv/app/server.sh
/srv/app/server.sh | grep -q serving
echo "tests passed"
