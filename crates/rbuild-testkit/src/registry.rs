//! A real registry process (CNCF distribution) on a free loopback port, for tests.
