//! `pdtf-agent model train|evaluate` (part of the binary): the arguments, progress and exit
//! codes; the work is `pdtf_agent::analytics` and `pdtf_models::analytics`.

use clap::Subcommand;
use pdtf_agent::analytics;
use pdtf_models::analytics::evaluate;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    /// Train a monitoring and forecast model from historical batches (a folder of one CSV
    /// per batch and a labels.json; see the README's *Batch analytics*): cross-validates by
    /// batch first (the figures print and go into the model file), then fits on every batch.
    /// Progress on stderr. Exits 0 when written, 2 on an error.
    Train {
        /// The model spec (TOML): variables, maturity axis, monitoring, quality attributes.
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// The folder of batches.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Where the model file goes.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Skip the cross-validation (faster; the model file then holds no figures).
        #[arg(long)]
        no_cross_validation: bool,
    },
    /// Judge batches with a trained model: per batch the first alarm against the labelled
    /// onset and the top contributing variables; overall detection by fault type, normal
    /// batches with any alarm, delay, and forecast Q², RMSE and interval coverage. Writes the
    /// whole result as JSON (--json). Exits 0 when done, 2 on an error.
    Evaluate {
        /// The model file (`model train --out`).
        #[arg(long, value_name = "FILE")]
        model: PathBuf,
        /// The folder of batches (same layout as for training).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Where the JSON goes (default: beside the model, `<model>.evaluation.json`).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

fn reading(i: usize, n: usize) {
    if i == n || i.is_multiple_of(25) {
        eprintln!("read {i} of {n} batches");
    }
}

pub(crate) fn run(command: ModelCommand) -> ExitCode {
    match work(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn work(command: ModelCommand) -> Result<(), String> {
    match command {
        ModelCommand::Train {
            spec,
            data,
            out,
            no_cross_validation,
        } => {
            let spec = analytics::read_spec(&spec)?;
            let batches = analytics::read_batches(&spec, &data, &mut reading)?;
            let mut progress = |m: &str| eprintln!("{m}");
            let cv = if no_cross_validation {
                None
            } else {
                let (_, summary) = evaluate::cross_validate(&spec, &batches, &mut progress)?;
                println!(
                    "batch-wise cross-validation ({} folds, {} batches):",
                    spec.folds,
                    batches.len()
                );
                print!("{}", analytics::summary_table(&summary));
                Some(summary)
            };
            let mut model = evaluate::train(&spec, &batches, &mut progress)?;
            model.cross_validation = cv;
            let digest = analytics::write_model(&model, &out)?;
            println!(
                "wrote {} ({} reference batches, {} forecasts, sha256 {digest})",
                out.display(),
                model.reference_batches.len(),
                model.forecasts.len()
            );
            Ok(())
        }
        ModelCommand::Evaluate { model, data, json } => {
            let (m, digest) = analytics::read_model(&model)?;
            eprintln!("model {} sha256 {digest}", model.display());
            let batches = analytics::read_batches(&m.spec, &data, &mut reading)?;
            let results = evaluate::judge(&m, &batches);
            for r in &results {
                println!("{}", analytics::batch_line(r));
            }
            let summary = evaluate::summarise(&results);
            print!("{}", analytics::summary_table(&summary));
            let path = json.unwrap_or_else(|| analytics::default_report(&model));
            let report = serde_json::json!({
                "model": model.display().to_string(),
                "model_sha256": digest,
                "summary": summary,
                "batches": results,
            });
            std::fs::write(&path, report.to_string())
                .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
    }
}
