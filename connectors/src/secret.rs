//! Secrets kept in files (systemd `LoadCredential=`, or any root-only file): the password is
//! the file's first line, without its line ending. One reader for MQTT brokers and OPC UA
//! identities, so both treat a file the same way.

use std::path::Path;

/// The first line of `path`, trailing whitespace removed. An unreadable file or an empty first
/// line is an error that names the file (an empty password is never sent).
pub fn read_password_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match text.lines().next().map(str::trim_end) {
        Some(pw) if !pw.is_empty() => Ok(pw.to_owned()),
        _ => Err(format!(
            "{}: the first line (the password) is empty",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::read_password_file;

    #[test]
    fn the_password_is_the_first_line_and_an_empty_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("pdtf-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        for (text, want) in [
            ("s3cret\n", Ok("s3cret")),
            ("s3cret \r\nsecond line\n", Ok("s3cret")),
            ("s3cret", Ok("s3cret")),
            ("\nlater\n", Err("empty")),
            ("", Err("empty")),
        ] {
            std::fs::write(&f, text).unwrap();
            match (read_password_file(&f), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{text:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w) && e.contains("pw"), "{e}"),
                (got, w) => panic!("{text:?}: {got:?}, expected {w:?}"),
            }
        }
        let e = read_password_file(&dir.join("missing")).unwrap_err();
        assert!(
            e.starts_with("cannot read ") && e.contains("missing"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
