//! The rbuild on-disk store: an OCI image layout with tags, locks, cache index and unpacked layers
