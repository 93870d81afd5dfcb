//! The `rbuild` command line.

fn main() {}
