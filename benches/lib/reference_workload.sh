# Shared by the benchmarks that build the reference workload (source it, then call the function).
#
# make_reference_workload WORK: writes WORK/base (the busybox base's context), WORK/ctx (2,000
# files of 100–4,000 bytes in 20 directories plus one 50 MiB random file) and WORK/Dockerfile
# (RUN mkdir/echo, COPY . /src, RUN find /src -type f | wc -l > /app/count, ENV, WORKDIR, CMD).
make_reference_workload() {
  local work=$1
  cp -r examples/busybox "$work/base"
  cp /bin/busybox "$work/base/busybox"
  python3 - "$work/ctx" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
for d in range(20):
    os.makedirs(f"{root}/dir{d:02}", exist_ok=True)
    for f in range(100):
        size = rng.randint(100, 4000)
        with open(f"{root}/dir{d:02}/file{f:03}.txt", "wb") as fh:
            fh.write(bytes(rng.getrandbits(8) for _ in range(size)))
with open(f"{root}/big.bin", "wb") as fh:
    fh.write(os.urandom(50 * 1024 * 1024))
PY
  cat > "$work/Dockerfile" <<'DF'
FROM localhost/busybox:latest
RUN mkdir -p /app && echo built > /app/built
COPY . /src
RUN find /src -type f | wc -l > /app/count
ENV APP=/app
WORKDIR /app
CMD ["cat", "/app/count"]
DF
}
