//! `pdtf-agent batch list|show|export` (part of the binary): the arguments and the exit
//! codes; the work is `pdtf_agent::batch::cli`.

use super::StateArgs;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum BatchCommand {
    /// One line per batch, oldest first: line, batch id, recipe, state, start, end, seqs.
    List {
        #[command(flatten)]
        state: StateArgs,
        /// Only this line's batches.
        #[arg(long, value_name = "LINE")]
        line: Option<String>,
        /// Only batches still running at or after this time (RFC 3339, e.g. 2026-12-01T06:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: Option<pdtf_models::Timestamp>,
        /// Only batches started at or before this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        to: Option<pdtf_models::Timestamp>,
        #[arg(long, value_enum, default_value = "text")]
        format: pdtf_agent::batch::cli::Format,
    },
    /// One batch: phases, materials, alarms inside it and the end-of-batch summary. Exits 1
    /// when the journal has no such batch.
    Show {
        /// The batch id (the latest batch with it, when one was run twice).
        id: String,
        #[command(flatten)]
        state: StateArgs,
        /// The batch's line, when batch ids repeat across lines.
        #[arg(long, value_name = "LINE")]
        line: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: pdtf_agent::batch::cli::Format,
    },
    /// Every record from the batch's first record to its last (all lines), one JSON record
    /// per line on stdout, as upstream receives them; the count on stderr.
    Export {
        /// The batch id.
        id: String,
        #[command(flatten)]
        state: StateArgs,
        /// The batch's line, when batch ids repeat across lines.
        #[arg(long, value_name = "LINE")]
        line: Option<String>,
    },
}

fn parse_time(s: &str) -> Result<pdtf_models::Timestamp, String> {
    humantime::parse_rfc3339_weak(s)
        .map(pdtf_models::Timestamp::from_system)
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-12-01T06:00:00Z)"))
}

/// `pdtf-agent batch ...`: exit 0, 1 (no such batch) or 2 (no journal, bad input).
pub(crate) fn run(command: BatchCommand) -> ExitCode {
    use pdtf_agent::batch::cli::{self, CliError};
    let state = match &command {
        BatchCommand::List { state, .. }
        | BatchCommand::Show { state, .. }
        | BatchCommand::Export { state, .. } => state.clone(),
    };
    let dir = match state.dir() {
        Ok(d) => d,
        Err(code) => return code,
    };
    let j = match pdtf_agent::journal::open_existing(&dir) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e} (is the agent still running? stop it first)");
            return ExitCode::from(2);
        }
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    let result = match command {
        BatchCommand::List {
            line,
            from,
            to,
            format,
            ..
        } => {
            let filter = pdtf_agent::batch::history::Filter { line, from, to };
            cli::list(j.as_ref(), &filter, format, &mut out, &mut err).map(|_| ())
        }
        BatchCommand::Show {
            id, line, format, ..
        } => cli::show(j.as_ref(), &id, line.as_deref(), format, &mut out, &mut err),
        BatchCommand::Export { id, line, .. } => {
            cli::export(j.as_ref(), &id, line.as_deref(), &mut out, &mut err)
                .map(|n| eprintln!("exported {n} records"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e @ CliError::NotFound(_)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
