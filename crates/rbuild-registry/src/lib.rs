//! OCI distribution client: push, pull, auth, conformant against a real registry
