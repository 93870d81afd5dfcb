//! A stateful fake Kubernetes API server that kubectl and kube-rs accept, for tests.
