//! Build facts for `pdtf-agent --version` and the `pdtf_build_info` metric: the git commit
//! (or `PDTF_GIT_COMMIT` when building from a tarball), the target triple and the features.

use std::process::Command;

fn main() {
    let commit = std::env::var("PDTF_GIT_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        let c = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        if !out.status.success() || c.is_empty() {
            return None;
        }
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        Some(if dirty { format!("{c}-modified") } else { c })
    });
    println!(
        "cargo:rustc-env=PDTF_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=PDTF_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase()))
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=PDTF_FEATURES={features}");
    println!("cargo:rerun-if-env-changed=PDTF_GIT_COMMIT");
    // A new commit moves HEAD's ref; the index changes on every staged edit.
    for f in ["../.git/HEAD", "../.git/index", "../.git/packed-refs"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    if let Ok(head) = std::fs::read_to_string("../.git/HEAD") {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=../.git/{r}");
        }
    }
}
