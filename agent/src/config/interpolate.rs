//! `${NAME}` references in config values, and the rule that passwords are only references.

use super::ConfigError;
use toml::Value;

/// Replaces `${NAME}` in every string value. An unset variable is an error at its path.
pub(super) fn interpolate(
    v: &mut Value,
    path: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Vec<ConfigError>,
) {
    let secret = (path.starts_with("opcua_servers.") && path.ends_with(".identity.password"))
        || (path.starts_with("brokers.") && path.ends_with(".password"));
    if secret {
        // Passwords never sit in a config file: only an environment reference.
        let is_ref = v.as_str().is_some_and(|s| {
            s.strip_prefix("${")
                .and_then(|r| r.strip_suffix('}'))
                .is_some_and(|n| !n.is_empty() && !n.contains(['$', '{', '}']))
        });
        if !is_ref {
            errs.push(ConfigError::new(
                file,
                path,
                "must be a ${ENV_VAR} reference (or use identity.password_file): passwords are not written in config files",
            ));
            *v = Value::String(String::new());
            return;
        }
    }
    match v {
        Value::String(s) if s.contains("${") => match substitute(s, env) {
            Ok(new) => *s = new,
            Err(msg) => errs.push(ConfigError::new(file, path, msg)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), file, env, errs);
            }
        }
        Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                interpolate(item, &format!("{path}.{k}"), file, env, errs);
            }
        }
        _ => {}
    }
}

fn substitute(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or("unterminated `${` (write `${NAME}`)")?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable name"
            ));
        }
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_rules() {
        let env = |n: &str| (n == "PW").then(|| "s3cr3t".to_owned());
        assert_eq!(substitute("a${PW}b${PW}", &env).unwrap(), "as3cr3tbs3cr3t");
        assert_eq!(
            substitute("no vars $ here", &env).unwrap(),
            "no vars $ here"
        );
        assert!(substitute("${NOPE}", &env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(substitute("${PW", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(substitute("${1X}", &env)
            .unwrap_err()
            .contains("not a valid"));
    }
}
