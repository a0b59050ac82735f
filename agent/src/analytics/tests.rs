use super::*;
use pdtf_models::analytics::evaluate::{judge, train};

const SPEC: &str = r#"
name = "two-tags"
variables = ["flow", "temp"]
maturity = "time_h"
resolution = 1.0
horizon = 40.0
folds = 3

[[quality]]
name = "titre"
checkpoints = [0.5]
blocks = 2
max_components = 2
"#;

/// A folder of `n` batches (the last two with a step on `temp` from 20 h) in the documented
/// layout, with a bad cell in the first.
fn folder(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut labels = Vec::new();
    for b in 0..n {
        let faulty = b >= n - 2;
        let gain = 1.0 + 0.05 * (rng.f64() - 0.5);
        let mut csv = String::from("time_h,flow,temp,state_hidden\n");
        for i in 1..=80 {
            let t = f64::from(i) * 0.5;
            let flow = gain * (5.0 + (t / 8.0).sin()) + 0.05 * (rng.f64() - 0.5);
            let step = if faulty && t >= 20.0 { 3.0 } else { 0.0 };
            let temp = 300.0 + 0.5 * flow + 0.05 * (rng.f64() - 0.5) + step;
            let flow = if b == 0 && i == 3 {
                "oops".to_owned()
            } else {
                flow.to_string()
            };
            csv.push_str(&format!("{t},{flow},{temp},1\n"));
        }
        std::fs::write(dir.path().join(format!("b{b}.csv")), csv).unwrap();
        labels.push(serde_json::json!({
            "batch_id": format!("b{b}"), "file": format!("b{b}.csv"), "faulty": faulty,
            "fault_type": faulty.then_some("temp_step"), "fault_start_h": faulty.then_some(20.0),
            "titre": 10.0 * gain,
        }));
    }
    let labels = serde_json::json!({ "batches": labels });
    std::fs::write(dir.path().join("labels.json"), labels.to_string()).unwrap();
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    dir
}

#[test]
fn a_model_trained_from_a_batch_folder_round_trips_through_its_file_and_refuses_tampering() {
    let dir = folder(14);
    let spec = read_spec(&dir.path().join("spec.toml")).unwrap();
    let mut seen = Vec::new();
    let batches = read_batches(&spec, dir.path(), &mut |i, n| seen.push((i, n))).unwrap();
    assert_eq!(seen.last(), Some(&(14, 14)));
    assert!(
        batches[0].values[0][2].is_nan(),
        "a bad cell is missing, not fatal"
    );
    assert_eq!(batches[13].fault.as_ref().map(|f| f.start), Some(20.0));
    let model = train(&spec, &batches, &mut |_| {}).unwrap();
    let path = dir.path().join("m.pdtf-model");
    let digest = write_model(&model, &path).unwrap();
    let (back, read_digest) = read_model(&path).unwrap();
    assert_eq!(digest, read_digest);
    assert_eq!(judge(&back, &batches), judge(&model, &batches));
    assert_eq!(back.reference_batches.len(), 12, "the normal batches only");

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"two-tags\"", "\"two-tagz\"", 1)).unwrap();
    let e = read_model(&path).unwrap_err();
    assert!(e.contains("changed or cut short"), "{e}");
    std::fs::write(&path, text.replacen("pdtf-model 1", "pdtf-model 9", 1)).unwrap();
    assert!(read_model(&path).unwrap_err().contains("model format 9"));
}

#[test]
fn a_bad_spec_or_folder_is_refused_naming_the_key_file_or_column() {
    let dir = folder(4);
    let bad = SPEC
        .replace("resolution = 1.0", "resolution = 0.0")
        .replace("folds = 3", "folds = 1");
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let e = read_spec(&dir.path().join("bad.toml")).unwrap_err();
    assert!(e.contains("resolution: 0 must be above 0"), "{e}");
    assert!(e.contains("folds: 1 must be at least 2"), "{e}");
    let unknown = format!("{SPEC}\ncolour = 1\n");
    std::fs::write(dir.path().join("unknown.toml"), unknown).unwrap();
    assert!(read_spec(&dir.path().join("unknown.toml"))
        .unwrap_err()
        .contains("colour"));

    let mut spec = read_spec(&dir.path().join("spec.toml")).unwrap();
    spec.variables.push("pressure".into());
    let e = read_batches(&spec, dir.path(), &mut |_, _| {}).unwrap_err();
    assert!(e.contains("b0.csv: no column \"pressure\""), "{e}");
    let e = read_batches(&spec, &dir.path().join("nowhere"), &mut |_, _| {}).unwrap_err();
    assert!(e.contains("labels.json: cannot read"), "{e}");
}
