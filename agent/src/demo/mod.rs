//! `pdtf-agent demo`: the whole job on one machine with nothing installed.
//!
//! An embedded broker on a free loopback port, the simulated granulator publishing to it, and
//! the agent running `config/demo.toml` with every broker pointed at the embedded one. The
//! granulator runs batches (its PLC publishes batch id and phase over OPC UA); the demo's own
//! MES starts the first one with an MQTT command and records a material charge. A status line
//! every second; a summary at the end, with each batch's phase durations and alarms.

mod mes;
mod sim;

use crate::config::{self, Config};
use crate::Agent;
use anyhow::{bail, Context};
use pdtf_connectors::Stats;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub struct DemoArgs {
    pub duration: Option<Duration>,
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

/// The demo config: `--config`, else `config/demo.toml` under the working directory, else the
/// copy in the source tree this binary was built from.
fn demo_config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| {
        let local = PathBuf::from("config/demo.toml");
        if local.exists() {
            local
        } else {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml"))
        }
    })
}

fn prepare(
    args: &DemoArgs,
    port: u16,
    opcua_endpoint: &str,
    modbus_port: u16,
) -> anyhow::Result<Config> {
    let path = demo_config_path(args.config.clone());
    let mut c = match config::load(&path) {
        Ok(c) => c,
        Err(errs) => {
            let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
            bail!("demo configuration is invalid:\n{}", list.join("\n"));
        }
    };
    for b in c.brokers.values_mut() {
        b.host = "127.0.0.1".into();
        b.port = port;
        b.backoff_initial_ms = 200;
        b.backoff_max_ms = 2_000;
    }
    for s in c.opcua_servers.values_mut() {
        s.endpoint = opcua_endpoint.to_owned();
    }
    for d in c.modbus_devices.values_mut() {
        d.host = Some("127.0.0.1".into());
        d.port = modbus_port;
    }
    c.agent.state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => {
            let d = std::env::temp_dir().join(format!("pdtf-demo-{}", std::process::id()));
            if d.exists() {
                std::fs::remove_dir_all(&d).with_context(|| format!("clearing {}", d.display()))?;
            }
            d
        }
    };
    Ok(c)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let port = crate::broker::start_embedded(0).context("starting the embedded MQTT broker")?;
    let stop_sim = CancellationToken::new();
    let plc_options = sim::plc_options();
    let plc_pki = plc_options.pki_dir.clone();
    let plc = crate::opcua_sim::SimServer::start(plc_options)
        .await
        .context("starting the simulated OPC UA server")?;
    let scale = crate::modbus_sim::ModbusSim::start(0, Default::default())
        .await
        .context("starting the simulated Modbus device")?;
    let c = prepare(&args, port, &plc.endpoint, scale.port)?;
    eprintln!(
        "PDTF Edge demo: broker mqtt://127.0.0.1:{port}, line {}, journal {}",
        c.topic_prefix(),
        c.agent.state_dir.display()
    );
    eprintln!(
        "Watch it: mosquitto_sub -p {port} -v -t '{}/alarms/#'   (Ctrl-C stops the demo)",
        c.topic_prefix()
    );
    eprintln!(
        "Simulated PLC: {} (try `pdtf-agent opcua browse --endpoint {}`)",
        plc.endpoint, plc.endpoint
    );
    let agent = Agent::start(&c).context("starting the agent")?;
    if let Some(addr) = agent.health_addr {
        eprintln!("HTTP API: http://{addr}/lines, http://{addr}/batches, http://{addr}/metrics");
    }
    let clock = Instant::now();
    let sim = tokio::spawn(sim::run(port, clock, stop_sim.clone()));
    let plc_sim = tokio::spawn(sim::run_plc(plc, clock, stop_sim.clone()));
    let mes = tokio::spawn(mes::run(
        port,
        c.line_prefix(&c.lines()[0]),
        c.agent.line.clone(),
        agent.batches.clone(),
        stop_sim.clone(),
    ));
    let scale_sim = tokio::spawn(sim::run_scale(scale.state.clone(), stop_sim.clone()));

    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_samples = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {
                let s = &agent.stats;
                let samples = Stats::get(&s.samples_in);
                let batch = batch_status(&agent.batches, &c.agent.line);
                let line = status_line(started.elapsed(), samples - last_samples, s, &batch);
                last_samples = samples;
                if tty {
                    eprint!("\r{line}   ");
                    let _flushed = std::io::stderr().flush();
                } else if started.elapsed().as_secs().is_multiple_of(5) {
                    eprintln!("{line}");
                }
                if args.duration.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    stop_sim.cancel();
    let _sim_done = sim.await;
    let _mes_done = mes.await;
    let plc = plc_sim.await.ok();
    let _scale_done = scale_sim.await;
    drop(scale);
    let stats = agent.stats.clone();
    let journal = agent.journal.location();
    let store = agent.journal.clone();
    let tag_ids = agent.tag_ids.clone();
    agent.shutdown(Duration::from_secs(5)).await;
    if let Some(plc) = plc {
        plc.stop().await;
    }
    // The simulated PLC's keys are made afresh each run; the agent's journal is kept.
    let _ = std::fs::remove_dir_all(&plc_pki);
    let by_source = samples_by_source(&c, &tag_ids, store.as_ref());
    print_summary(started.elapsed(), &stats, &by_source, &journal);
    print_batches(store.as_ref());
    Ok(ExitCode::SUCCESS)
}

/// `batch GR-2026-0142 spraying` (or `no batch`) from the line's `P/batch` state.
fn batch_status(live: &crate::batch::Live, line: &str) -> String {
    let state: Option<serde_json::Value> = live
        .lock()
        .ok()
        .and_then(|m| m.get(line).and_then(|b| serde_json::from_slice(b).ok()));
    match state {
        Some(v) if v["batch_id"].is_string() => format!(
            "batch {} {}",
            v["batch_id"].as_str().unwrap_or_default(),
            v["phase"]
                .as_str()
                .unwrap_or(v["state"].as_str().unwrap_or_default())
        ),
        _ => "no batch".to_owned(),
    }
}

fn status_line(t: Duration, samples_last_s: u64, s: &Stats, batch: &str) -> String {
    format!(
        "[{:>4}s] {batch} | samples/s {:>4} | active alarms {} | records committed {} | upstream backlog {} | malformed {}",
        t.as_secs(),
        samples_last_s,
        Stats::get(&s.alarms_active),
        Stats::get(&s.records_committed),
        s.upstream_backlog(),
        Stats::get(&s.malformed_in),
    )
}

/// The batches the journal holds: how many, then each with its phases (duration and alarms
/// from the end-of-batch summary, or still running).
fn print_batches(journal: &dyn crate::journal::Store) {
    use crate::batch::history;
    let all = match history::batch_records(journal, &mut |_, _| {}) {
        Ok(r) => history::fold(&r),
        Err(e) => {
            println!("  batches                 unreadable: {e}");
            return;
        }
    };
    let done = all.iter().filter(|b| !b.is_open()).count();
    println!(
        "  batches started         {} ({done} ended, {} running)",
        all.len(),
        all.len() - done
    );
    for b in &all {
        let phases: Vec<String> = match &b.summary {
            Some(s) => s
                .phases
                .iter()
                .map(|p| {
                    format!(
                        "{} {:.1} s{}",
                        p.name,
                        p.duration_ms as f64 / 1000.0,
                        if p.alarms > 0 {
                            format!(" ({} alarms)", p.alarms)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect(),
            None => b.phases.iter().map(|p| p.name.clone()).collect(),
        };
        let charged: Vec<String> = b
            .materials
            .iter()
            .map(|m| format!("{} {} {} lot {}", m.material, m.quantity, m.unit, m.lot))
            .collect();
        println!(
            "    {} {}: {}{}",
            b.batch_id,
            b.state,
            phases.join(", "),
            if charged.is_empty() {
                String::new()
            } else {
                format!("; charged {}", charged.join(", "))
            }
        );
    }
}

/// Committed sample records per source (`id (kind) count`), read back from the journal.
fn samples_by_source(
    c: &Config,
    tag_ids: &[pdtf_models::TagId],
    journal: &dyn crate::journal::Store,
) -> String {
    let mut counts = vec![0u64; c.sources.len()];
    // By durable tag id: the source of each configured tag.
    let space = tag_ids.iter().map(|t| t.index() + 1).max().unwrap_or(0);
    let mut source_of: Vec<Option<usize>> = vec![None; space];
    for (t, id) in c.tags.iter().zip(tag_ids) {
        source_of[id.index()] = c.sources.iter().position(|s| s.id == t.source);
    }
    let mut from = journal.first_seq().unwrap_or(pdtf_models::Seq(1));
    while let Ok(chunk) = journal.read_from(from, 10_000) {
        let Some(last) = chunk.last() else { break };
        from = pdtf_models::Seq(last.seq.0 + 1);
        for r in &chunk {
            if let pdtf_models::RecordBody::Sample(s) = &r.body {
                if let Some(Some(i)) = source_of.get(s.tag.0 as usize) {
                    counts[*i] += 1;
                }
            }
        }
    }
    let parts: Vec<String> = c
        .sources
        .iter()
        .zip(counts)
        .map(|(s, n)| format!("{} ({:?}) {n}", s.id, s.kind()).to_lowercase())
        .collect();
    parts.join(", ")
}

fn print_summary(t: Duration, s: &Stats, by_source: &str, journal: &std::path::Path) {
    println!("PDTF Edge demo summary ({:.1} s)", t.as_secs_f64());
    println!("  samples ingested        {}", Stats::get(&s.samples_in));
    println!("  samples by source       {by_source}");
    println!("  malformed inputs        {}", Stats::get(&s.malformed_in));
    println!(
        "  records committed       {} (last seq {})",
        Stats::get(&s.records_committed),
        Stats::get(&s.last_seq)
    );
    println!("  alarms raised           {}", Stats::get(&s.alarms_raised));
    println!(
        "  alarm states published  {}",
        Stats::get(&s.alerts_published)
    );
    println!(
        "  records acked upstream  {} (backlog {})",
        Stats::get(&s.upstream_acked_seq),
        s.upstream_backlog()
    );
    println!("  journal                 {}", journal.display());
}
