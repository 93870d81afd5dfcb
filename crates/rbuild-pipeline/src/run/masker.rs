//! Secret masking of job output, as GitLab masks masked variables in job logs.

/// Replaces secret values with `[MASKED]` (GitLab's marker) in output lines.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<String>,
}

impl Masker {
    /// Masks these values. Multi-line values (a kubeconfig's content) are masked line by line,
    /// since output is masked per line; lines shorter than 8 characters are not masked on
    /// their own (GitLab's minimum masked length), the whole short value still is.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = Vec::new();
        for v in values {
            if v.contains('\n') {
                secrets.extend(
                    v.lines()
                        .map(str::trim)
                        .filter(|l| l.len() >= 8)
                        .map(str::to_owned),
                );
            } else if !v.is_empty() {
                secrets.push(v);
            }
        }
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// The line with every secret replaced.
    pub fn mask(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[MASKED]");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masker_masks_longest_first_and_multiline_by_line() {
        let m = Masker::new([
            "abc".to_owned(),
            "abcdef".to_owned(),
            "line-one-secret\nok\nline-two-secret".into(),
        ]);
        assert_eq!(m.mask("x abcdef y abc"), "x [MASKED] y [MASKED]");
        assert_eq!(m.mask("line-two-secret ok"), "[MASKED] ok");
    }

    #[test]
    fn short_and_empty_values() {
        // A short single-line value is masked whole; an empty one masks nothing.
        let m = Masker::new(["pw".to_owned(), String::new()]);
        assert_eq!(m.mask("pw=pw"), "[MASKED]=[MASKED]");
        assert_eq!(m.mask("nothing here"), "nothing here");
        // A multi-line value's short lines are not masked on their own.
        let m = Masker::new(["ok\nlonger-secret-line".to_owned()]);
        assert_eq!(m.mask("ok longer-secret-line"), "ok [MASKED]");
    }

    #[test]
    fn a_secret_containing_another_is_masked_whole() {
        let m = Masker::new(["token".to_owned(), "token-with-suffix".to_owned()]);
        assert_eq!(m.mask("token-with-suffix token"), "[MASKED] [MASKED]");
    }
}
