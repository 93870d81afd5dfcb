#!/bin/sh
echo "serving $(cat /srv/app/VERSION)"
