//! Run a process in a root filesystem: namespaces and an overlay mount
