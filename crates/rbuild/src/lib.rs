//! The rbuild engine: build OCI images from Dockerfiles without a daemon
