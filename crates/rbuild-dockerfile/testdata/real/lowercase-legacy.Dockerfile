from ubuntu:14.04
maintainer Old Timer <old@example.com>
env DEBIAN_FRONTEND noninteractive
run apt-get update && apt-get install -y \
      build-essential \
    && apt-get clean
add http://example.com/file.tar.gz /tmp/
expose 22 80
volume ["/var/log"]
onbuild add . /app
cmd /bin/bash
