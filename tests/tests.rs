//! Integration tests across crates, driving the `rbuild` binary and real tools.
