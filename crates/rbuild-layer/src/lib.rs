//! Layer tarballs: deterministic writer, safe apply, overlay upperdir diff
