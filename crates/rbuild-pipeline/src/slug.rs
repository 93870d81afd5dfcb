//! GitLab's slug algorithms for `CI_COMMIT_REF_SLUG` and `CI_ENVIRONMENT_SLUG`.

use sha2::{Digest as _, Sha256};

/// `CI_COMMIT_REF_SLUG`: GitLab's `Gitlab::Utils.slugify(ref)`.
///
/// The ref name lowercased, every byte outside `[a-z0-9]` replaced by `-`, cut to 63 bytes
/// (a DNS label), then leading and trailing `-` removed: `feature/Login_2` → `feature-login-2`.
/// Unlike the environment slug, repeated dashes stay and no suffix is added.
pub fn ref_slug(ref_name: &str) -> String {
    let replaced: String = ref_name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    replaced.trim_matches('-').to_owned()
}

/// `CI_ENVIRONMENT_SLUG`: GitLab's `Gitlab::Slug::Environment#generate`.
///
/// The rule, step by step as upstream does it:
/// 1. lowercase the name and replace every character outside `[a-z0-9]` with `-`;
/// 2. if the result does not start with a letter, prefix `env-`;
/// 3. squeeze runs of `-` into one;
/// 4. if the result is longer than 24 characters **or differs from the original name** (any
///    change at all: case, a replaced character, the `env-` prefix, a squeezed dash), keep its
///    first 17 characters, add `-` unless it already ends with one, and append a 6-character
///    suffix: the last 6 digits of the name's SHA-256 (read as one big-endian integer) written
///    in base 36 (`0-9a-z`), which makes two names that slug alike still differ;
/// 5. otherwise (the name was already a valid slug) drop one trailing `-`: `foo-` → `foo`,
///    without a suffix, exactly as upstream's `chomp('-')`.
///
/// So `staging` → `staging`, `Production` → `production-` + suffix, `review/feature-1` →
/// `review-feature-1-` + suffix, and the result is at most 24 characters.
pub fn environment_slug(name: &str) -> String {
    let mut slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug = format!("env-{slug}");
    }
    let mut squeezed = String::with_capacity(slug.len());
    for c in slug.chars() {
        if c == '-' && squeezed.ends_with('-') {
            continue;
        }
        squeezed.push(c);
    }
    // Every character is ASCII now, so byte and character counts agree.
    if squeezed.len() > 24 || squeezed != name {
        let mut short: String = squeezed.chars().take(17).collect();
        if !short.ends_with('-') {
            short.push('-');
        }
        short.push_str(&sha256_base36_tail(name));
        short
    } else {
        squeezed.strip_suffix('-').unwrap_or(&squeezed).to_owned()
    }
}

/// Ruby's `Digest::SHA2.hexdigest(name).to_i(16).to_s(36).last(6)`.
fn sha256_base36_tail(name: &str) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    const MODULUS: u64 = 36u64.pow(6);
    let hash = Sha256::digest(name.as_bytes());
    // The last 6 base-36 digits are the number modulo 36^6; fold the bytes in big-endian.
    let mut rem: u64 = 0;
    for byte in hash.iter() {
        rem = (rem * 256 + u64::from(*byte)) % MODULUS;
    }
    // `last(6)` of a shorter string is the whole string: only when the hash itself is below
    // 36^6 (never seen in practice) are there fewer than 6 digits, and then no zero padding.
    let whole_is_small = hash[..hash.len() - 4].iter().all(|b| *b == 0);
    let mut digits = Vec::with_capacity(6);
    let mut n = rem;
    for _ in 0..6 {
        digits.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if whole_is_small && n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Suffixes cross-checked with an independent big-integer computation of Ruby's
    /// expression (`int(sha256(name).hexdigest(), 16)` in base 36, last 6 digits).
    #[test]
    fn environment_slug_golden() {
        let cases = [
            ("staging", "staging".to_owned()),
            ("production", "production".to_owned()),
            ("Production", "production-iis43c".to_owned()),
            ("review/1-foo", "review-1-foo-9tdj0u".to_owned()),
            (
                "1-foo",
                format!("env-1-foo-{}", sha256_base36_tail("1-foo")),
            ),
            (
                "staging-1234567890123456",
                "staging-1234567890123456".to_owned(),
            ),
            (
                "staging-12345678901234567",
                format!(
                    "staging-123456789-{}",
                    sha256_base36_tail("staging-12345678901234567")
                ),
            ),
            (
                "foo--bar",
                format!("foo-bar-{}", sha256_base36_tail("foo--bar")),
            ),
            ("foo-", "foo".to_owned()),
            ("Foo-", format!("foo-{}", sha256_base36_tail("Foo-"))),
        ];
        for (name, want) in cases {
            let got = environment_slug(name);
            assert_eq!(got, want, "slug of {name:?}");
            assert!(got.len() <= 24, "{got} longer than 24");
        }
    }

    #[test]
    fn base36_suffix_matches_ruby() {
        assert_eq!(
            sha256_base36_tail("Production"),
            include_str!("../testdata/slug/Production").trim()
        );
        assert_eq!(
            sha256_base36_tail("PRODUCTION"),
            include_str!("../testdata/slug/PRODUCTION").trim()
        );
    }

    #[test]
    fn ref_slug_golden() {
        assert_eq!(ref_slug("master"), "master");
        assert_eq!(ref_slug("feature/Login_2"), "feature-login-2");
        assert_eq!(ref_slug("-v1.0-"), "v1-0");
        assert_eq!(ref_slug("a//b"), "a--b");
        assert_eq!(ref_slug(&"x".repeat(80)).len(), 63);
    }
}
