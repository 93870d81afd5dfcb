//! Parse throughput of `rbuild_dockerfile::parse` in MB/s on a large generated Dockerfile
//! (multi-stage, long `&& \` continuations, `RUN --mount`, heredocs, ENV/LABEL lists, exec
//! forms), and of the AST dump on the same input.
//!
//! Run: `cargo bench -p rbuild-dockerfile --bench dockerfile_parse`

// criterion_group! generates an undocumented pub function.
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fmt::Write as _;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// About 2 MiB of Dockerfile in the styles real projects use.
fn generate() -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm-slim\n");
    let mut stage = 0;
    while s.len() < 2 << 20 {
        writeln!(s, "FROM ${{BASE}} AS stage{stage}").unwrap();
        writeln!(
            s,
            "ENV APP_HOME=/srv/app{stage} PATH=/srv/app{stage}/bin:$PATH LANG=C.UTF-8"
        )
        .unwrap();
        s.push_str("RUN set -eux; \\\n");
        for i in 0..12 {
            writeln!(
                s,
                "    apt-get install -y --no-install-recommends pkg{i}-{stage} && \\"
            )
            .unwrap();
        }
        s.push_str("    rm -rf /var/lib/apt/lists/*\n");
        s.push_str(
            "RUN --mount=type=cache,target=/root/.cache,sharing=locked \\\n    \
             --mount=type=bind,source=go.sum,target=go.sum \\\n    go build -o /out/app ./...\n",
        );
        writeln!(
            s,
            "COPY --from=stage{stage} --chown=app:app --link /out/app /usr/local/bin/app"
        )
        .unwrap();
        s.push_str("COPY <<EOF /etc/app.conf\nlisten = 8080\nworkers = 4\nEOF\n");
        s.push_str("LABEL org.opencontainers.image.title=\"app\" org.opencontainers.image.version=\"1.0\"\n");
        s.push_str("HEALTHCHECK --interval=30s CMD [\"/usr/local/bin/app\", \"health\"]\n");
        s.push_str("ENTRYPOINT [\"/usr/local/bin/app\"]\n# a comment between stages\n\n");
        stage += 1;
    }
    s
}

fn bench(c: &mut Criterion) {
    let src = generate();
    let mut g = c.benchmark_group("dockerfile");
    g.throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| rbuild_dockerfile::parse(std::hint::black_box(&src)).map(|d| d.stages.len()))
    });
    let df = rbuild_dockerfile::parse(&src).expect("generated Dockerfile parses");
    g.bench_function("dump", |b| b.iter(|| df.dump().len()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
