//! The Go-template subset of `docker inspect --format`: `{{.Field.Sub}}` and
//! `{{json .Field}}` actions against docker's inspect object; text outside actions is copied.

use anyhow::Context as _;

/// Expands the `{{.A.B}}` and `{{json .A.B}}` actions of a Go template against `value`;
/// strings print raw, anything else as JSON.
pub(super) fn format_template(template: &str, value: &serde_json::Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .with_context(|| format!("unclosed `{{{{` in format {template:?}"))?;
        let action = after[..end].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let Some(path) = path.strip_prefix('.') else {
            anyhow::bail!("unsupported format action `{action}`: only .Field and json .Field");
        };
        let mut v = value;
        for field in path.split('.').filter(|f| !f.is_empty()) {
            v = &v[field];
        }
        match v {
            serde_json::Value::String(s) if !json => out.push_str(s),
            other => out.push_str(&serde_json::to_string(other)?),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_pick_fields() {
        let v = serde_json::json!({"Id": "sha256:ab", "Config": {"Env": ["A=1"], "User": "app"}});
        assert_eq!(format_template("{{.Id}}", &v).unwrap(), "sha256:ab");
        assert_eq!(
            format_template("user={{.Config.User}} env={{json .Config.Env}}", &v).unwrap(),
            "user=app env=[\"A=1\"]"
        );
        assert!(format_template("{{range .X}}", &v).is_err());
    }

    #[test]
    fn text_around_actions_is_kept_and_spaces_inside_are_trimmed() {
        let v = serde_json::json!({"Os": "linux", "Size": 42, "RepoTags": []});
        assert_eq!(
            format_template("os: {{ .Os }}, size={{.Size}}!", &v).unwrap(),
            "os: linux, size=42!"
        );
        assert_eq!(format_template("no actions", &v).unwrap(), "no actions");
        assert_eq!(format_template("{{json .Os}}", &v).unwrap(), "\"linux\"");
        assert_eq!(format_template("{{.RepoTags}}", &v).unwrap(), "[]");
        // `{{.}}` is the whole object.
        assert_eq!(
            format_template("{{.}}", &serde_json::json!({"A": 1})).unwrap(),
            "{\"A\":1}"
        );
    }

    #[test]
    fn missing_fields_print_null() {
        let v = serde_json::json!({"Config": {}});
        assert_eq!(format_template("{{.Config.User}}", &v).unwrap(), "null");
        assert_eq!(format_template("{{.Nope.Deeper}}", &v).unwrap(), "null");
    }

    #[test]
    fn malformed_templates_are_errors() {
        let v = serde_json::json!({});
        let err = format_template("{{.Id", &v).unwrap_err().to_string();
        assert_eq!(err, "unclosed `{{` in format \"{{.Id\"");
        let err = format_template("{{index .A 0}}", &v)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unsupported format action `index .A 0`"),
            "{err}"
        );
    }
}
