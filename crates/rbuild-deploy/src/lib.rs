//! Kubernetes deployer: set an image by digest, wait like kubectl rollout status, roll back.
//!
//! The last step of a build pipeline: point a Deployment's container at the image just pushed,
//! by digest (`repo:tag@sha256:…`, never a moving tag), and wait until the rollout is done the
//! way `kubectl rollout status` decides it, printing its messages. The previous image is
//! recorded in an annotation ([`HISTORY_ANNOTATION`]) so that [`Deployer::rollback`] needs no
//! ReplicaSet history.
//!
//! Resolving a tag to its digest is the registry client's job: this crate takes the pinned
//! image string and the reference as the user wrote it (for the `latest` rule and messages).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use rbuild_deploy::{ConnectOptions, DeployOptions, Deployer, Progress, check_not_latest};
//! use rbuild_oci::{Events, Reference};
//!
//! # async fn run() -> Result<(), rbuild_deploy::Error> {
//! let requested: Reference = "registry.example.com/shop/web:1.4.2".parse().expect("reference");
//! check_not_latest(&requested, false)?;
//! // The registry client resolved the tag to this digest.
//! let pinned = "registry.example.com/shop/web:1.4.2@sha256:\
//!               4c4e7d5b9a6f0e1d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a49382716051";
//! let deployer = Deployer::connect(&ConnectOptions::default()).await?;
//! let options = DeployOptions::default()
//!     .namespace("shop")
//!     .timeout(Duration::from_secs(300))
//!     .rollback_on_failure(true);
//! let deployed = deployer
//!     .deploy("web", pinned, &requested, &options, Events::new(|event| match event {
//!         Progress::ImageUpdated { deployment, .. } => {
//!             println!("deployment.apps/{deployment} image updated")
//!         }
//!         Progress::Status(message) => println!("{message}"),
//!         Progress::RollingBack { image, failure, .. } => {
//!             eprintln!("error: {failure}; rolling back to {image}")
//!         }
//!         _ => {}
//!     }))
//!     .await?;
//! println!("{} now runs {}", deployed.deployment, deployed.image);
//! # Ok(())
//! # }
//! ```

mod deployer;
mod error;
pub mod history;
mod options;
pub mod status;

pub use deployer::Deployer;
pub use error::{Error, Result};
pub use history::{HISTORY_ANNOTATION, HistoryEntry};
pub use options::{ConnectOptions, DeployOptions, Deployed, Progress};
pub use status::{RolloutFailure, RolloutState, rollout_state};

use rbuild_oci::Reference;

/// The pipeline's rule: `latest`, or a reference without a tag (which means `latest`), is
/// refused unless `allow_latest`. A reference pinned by digest alone is accepted: it cannot move.
///
/// # Errors
///
/// [`Error::LatestRefused`] naming the reference.
pub fn check_not_latest(reference: &Reference, allow_latest: bool) -> Result<()> {
    // `Reference` parsing turns an untagged, undigested name into tag `latest`, so both cases
    // arrive here as `latest`.
    if allow_latest || reference.tag() != Some("latest") {
        return Ok(());
    }
    Err(Error::LatestRefused {
        reference: reference.familiar(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn latest_and_untagged_are_refused() {
        for r in ["busybox", "busybox:latest", "localhost:5000/app"] {
            let e = check_not_latest(&reference(r), false).unwrap_err();
            assert!(matches!(e, Error::LatestRefused { .. }), "{r}");
            assert!(e.to_string().contains("--allow-latest"), "{e}");
            check_not_latest(&reference(r), true).unwrap();
        }
    }

    #[test]
    fn versions_and_digests_are_accepted() {
        let digest = "sha256:4c4e7d5b9a6f0e1d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a49382716051";
        check_not_latest(&reference("busybox:1.36"), false).unwrap();
        check_not_latest(&reference(&format!("busybox@{digest}")), false).unwrap();
        // A digest does not excuse the moving tag named next to it.
        assert!(check_not_latest(&reference(&format!("busybox:latest@{digest}")), false).is_err());
    }
}
