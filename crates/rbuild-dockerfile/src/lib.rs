//! Dockerfile parser with BuildKit's syntax and variable expansion (no IO)
