//! Kubernetes deployer: set an image by digest, wait like kubectl rollout status, roll back
