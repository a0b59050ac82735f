//! Every configuration fixture produces its expected errors, the shipped configurations are
//! valid, and a misspelt key anywhere in them is rejected with its TOML path.

use pdtf_agent::config::{load, load_str};
use std::path::{Path, PathBuf};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// A copy of `config/` with the example's TLS files generated (the repository carries no
/// keys), so the example loads as it would on a gateway.
fn prepared() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("config");
    copy_dir(&config_dir(), &root);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gw03".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let tls = root.join("example/tls");
    std::fs::write(tls.join("site-ca.pem"), ca.pem()).unwrap();
    std::fs::write(tls.join("gw03.pem"), cert.pem()).unwrap();
    std::fs::write(tls.join("gw03.key"), key.serialize_pem()).unwrap();
    (tmp, root)
}

fn render(errs: &[pdtf_agent::config::ConfigError]) -> String {
    errs.iter().map(|e| format!("{e}\n")).collect()
}

#[test]
fn every_invalid_fixture_gives_its_expected_errors() {
    let dir = config_dir().join("invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let expected_path = path.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no {}", path.display(), expected_path.display()));
        let errs = match load(&path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(errs) => errs,
        };
        let out = render(&errs);
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                out.contains(line),
                "{}: expected\n  {line}\nin\n{out}",
                path.display()
            );
        }
        let wanted = expected.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(
            errs.len(),
            wanted,
            "{}: unexpected extra errors:\n{out}",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 8,
        "only {checked} fixtures found in {}",
        dir.display()
    );
}

fn fake_env(name: &str) -> Option<String> {
    name.starts_with("PDTF_").then(|| "from-env".to_owned())
}

const VALID: &[&str] = &["demo.toml", "example/agent.toml", "two-lines.toml"];

#[test]
fn shipped_configurations_are_valid() {
    let (_tmp, root) = prepared();
    for rel in VALID {
        let path = root.join(rel);
        let text = std::fs::read_to_string(&path).unwrap();
        let c =
            load_str(&text, &path, &fake_env).unwrap_or_else(|e| panic!("{rel}:\n{}", render(&e)));
        assert!(!c.tags.is_empty(), "{rel} maps no tags");
    }
    let example = root.join("example/agent.toml");
    let c = load_str(
        &std::fs::read_to_string(&example).unwrap(),
        &example,
        &fake_env,
    )
    .unwrap();
    assert_eq!(
        c.brokers["plant"].password.as_deref(),
        Some("from-env"),
        "${{ENV}} is interpolated"
    );
}

/// Paths of every key in a TOML document, as the loader reports them (`a.b[2].c`).
fn key_paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(p.clone());
                key_paths(child, &p, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.is_table() {
                    key_paths(item, &format!("{prefix}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Inserts `{last}x` beside the key at `path` (a misspelling of it).
fn misspell(doc: &mut toml::Value, path: &str) -> String {
    let (parent, key) = path.rsplit_once('.').map_or(("", path), |(p, k)| (p, k));
    let mut node = doc;
    for part in parent.split('.').filter(|p| !p.is_empty()) {
        let (name, idx) = match part.split_once('[') {
            Some((n, i)) => (n, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (part, None),
        };
        node = node.get_mut(name).unwrap();
        if let Some(i) = idx {
            node = node.get_mut(i).unwrap();
        }
    }
    let table = node.as_table_mut().unwrap();
    let value = table[key].clone();
    let bad = format!("{key}x");
    table.insert(bad.clone(), value);
    bad
}

#[test]
fn a_misspelt_key_anywhere_is_rejected_with_its_path() {
    let (_prepared, root) = prepared();
    let tmp = tempfile::tempdir().unwrap();
    let mut tried = 0;
    for rel in VALID {
        let agent_path = root.join(rel);
        let agent_dir = agent_path.parent().unwrap().to_owned();
        let agent_text = std::fs::read_to_string(&agent_path).unwrap();
        let c = load_str(&agent_text, &agent_path, &fake_env).unwrap();
        // The agent file and each tag file it includes.
        let mut files: Vec<PathBuf> = vec![agent_path.clone()];
        files.extend(c.tag_origins.iter().map(|o| PathBuf::from(&o.file)));
        files.sort();
        files.dedup();
        for file in files {
            let doc: toml::Value =
                toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let mut paths = Vec::new();
            key_paths(&doc, "", &mut paths);
            for path in &paths {
                // Work on a copy of the config tree so includes resolve.
                let root = tmp.path().join(format!("case{tried}"));
                copy_dir(&agent_dir, &root);
                let target = root.join(file.strip_prefix(&agent_dir).unwrap());
                let mut bad_doc = doc.clone();
                let bad_key = misspell(&mut bad_doc, path);
                std::fs::write(&target, toml::to_string(&bad_doc).unwrap()).unwrap();
                let root_agent = root.join(agent_path.file_name().unwrap());
                let errs = load_str(
                    &std::fs::read_to_string(&root_agent).unwrap(),
                    &root_agent,
                    &fake_env,
                )
                .expect_err(&format!("{}: misspelt {path} accepted", file.display()));
                let want = match path.rsplit_once('.') {
                    Some((parent, _)) => format!("{parent}.{bad_key}"),
                    None => bad_key.clone(),
                };
                assert!(
                    errs.iter().any(|e| e.path == want
                        && (e.message.contains("unknown") || e.message.contains("not used"))),
                    "{}: misspelling {path} gave\n{}",
                    file.display(),
                    render(&errs)
                );
                tried += 1;
            }
        }
    }
    assert!(tried > 40, "only {tried} keys tried");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The runtime takes only a configuration that validates: one changed in code after loading
/// (a broker reference broken, a Modbus device dropped) is refused with every error, before
/// the journal is opened or anything connects.
#[test]
fn the_runtime_refuses_a_configuration_changed_into_an_invalid_one() {
    use pdtf_agent::config::SourceSpec;
    use pdtf_agent::runtime::StartError;
    let (_tmp, root) = prepared();
    let path = root.join("demo.toml");
    let mut c = load_str(&std::fs::read_to_string(&path).unwrap(), &path, &fake_env).unwrap();
    let state_dir = _tmp.path().join("never-created");
    c.agent.state_dir = state_dir.clone();
    for s in &mut c.sources {
        if let SourceSpec::Mqtt(m) = &mut s.spec {
            m.broker = "nowhere".into();
        }
    }
    c.modbus_devices.clear();
    let errors = match pdtf_agent::Agent::start(&c) {
        Ok(_) => panic!("an invalid configuration started"),
        Err(StartError::Invalid { errors }) => errors,
        Err(e) => panic!("refused for another reason: {e}"),
    };
    let shown = render(&errors);
    assert!(
        errors
            .iter()
            .any(|e| e.path.ends_with(".broker")
                && e.message.contains("no broker named \"nowhere\"")),
        "{shown}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.path.ends_with(".device") && e.message.contains("no Modbus device")),
        "{shown}"
    );
    assert!(!state_dir.exists(), "the journal was not opened");
}
