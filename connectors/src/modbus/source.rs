//! The polling task of one bus: a TCP device, or every device on one RTU serial line.
//!
//! Read-only by design: only function codes 1–4 are ever sent.
//!
//! What goes wrong is told apart:
//! - **The device said no** (a Modbus exception): the tags of that read are Bad with status
//!   `0x8000_00XX` (XX the exception code) and the connection stays.
//! - **The link** (no reply within `timeout_ms`, a closed socket, a short or garbled frame,
//!   a reply to another request): over TCP the connection is dropped and made again with
//!   capped, jittered backoff; on an RTU line only the unit that did not answer is down (the
//!   others share the line and go on); a serial port error reopens the port. The unit's
//!   tags go Bad at once (`LinkDown`) and the first reply afterwards closes the outage with
//!   a gap record. Dropping the TCP connection also means a late reply to a timed-out request
//!   can never be read as the answer to a later one; a mismatched reply (tokio-modbus checks
//!   the transaction and unit id) is discarded and counted.

use super::config::{ModbusDeviceConfig, Parity, Table, Transport};
use super::decode::{self, Decoded};
use super::plan::{plan, Group, PollTag, Read};
use crate::stats::SourceCounters;
use crate::{Backoff, Outage, SourceMsg, Stats};
use pdtf_models::{status, Quality, Sample, TagId, Timestamp, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::{Slave, SlaveContext};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One device: a `[[sources]]` entry of kind `modbus` and its tags.
#[derive(Debug)]
pub struct ModbusUnit {
    /// The source id.
    pub id: String,
    pub device_name: String,
    pub device: ModbusDeviceConfig,
    pub tags: Vec<PollTag>,
    /// A new tag list after a reload (the plan is made again, the connection kept).
    pub reload: Option<watch::Receiver<Vec<PollTag>>>,
    /// The most samples in one message to the pipeline: a larger poll cycle goes in several.
    pub max_batch_samples: usize,
}

/// Devices that share one connection: a TCP device alone, or the units of an RTU line.
#[derive(Debug)]
pub struct ModbusBus {
    pub units: Vec<ModbusUnit>,
}

/// Status of a tag whose read the device refused: Bad, the exception code in the low byte.
pub const fn exception_status(code: u8) -> u32 {
    status::BAD | code as u32
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

struct Unit {
    cfg: ModbusUnit,
    groups: Vec<Group>,
    /// The tags' ids (for outages and gaps), kept with the plan.
    ids: Vec<TagId>,
    due: Vec<Instant>,
    outage: Outage,
    own: Arc<SourceCounters>,
    overrun_told: bool,
    /// The exception code last logged, so a device that keeps refusing is logged once.
    refused: Option<u8>,
}

impl Unit {
    fn new(cfg: ModbusUnit, stats: &Stats) -> Self {
        let own = stats.source(&cfg.id);
        let mut u = Unit {
            cfg,
            groups: Vec::new(),
            ids: Vec::new(),
            due: Vec::new(),
            outage: Outage::default(),
            own,
            overrun_told: false,
            refused: None,
        };
        u.replan();
        u
    }

    fn replan(&mut self) {
        self.groups = plan(&self.cfg.tags, &self.cfg.device);
        self.ids = self.cfg.tags.iter().map(|t| t.tag).collect();
        let at = Instant::now();
        self.due = vec![at; self.groups.len()];
    }

    fn component(&self) -> String {
        format!("source {}", self.cfg.id)
    }

    fn reschedule(&mut self, g: usize, finished: Instant) {
        let interval = self.groups[g].interval;
        let (next, skipped) = next_due(self.due[g], interval, finished);
        self.due[g] = next;
        if skipped > 0 {
            Stats::add(&self.own.modbus.overruns, 1);
            if !self.overrun_told {
                self.overrun_told = true;
                warn!(source = %self.cfg.id, interval_ms = interval.as_millis() as u64, skipped, "Modbus poll cycle longer than its interval: the missed polls are skipped (counted in pdtf_modbus_overruns; logged once).");
            }
        }
    }
}

/// The next due time of a poll that was due at `due` and finished at `finished`: fixed
/// cadence (`due + interval`, never `finished + interval`, so no drift), and polls an
/// overrun missed are skipped, never queued. Returns how many were skipped.
pub(crate) fn next_due(due: Instant, interval: Duration, finished: Instant) -> (Instant, u32) {
    let next = due + interval;
    if next > finished {
        return (next, 0);
    }
    let behind = ((finished - next).as_nanos() / interval.as_nanos().max(1)) as u32 + 1;
    (next + interval * behind, behind)
}

/// How one poll cycle ended.
enum Outcome {
    Data(Vec<Sample>),
    /// The link failed: why, whether the connection itself failed (an I/O error: on an RTU
    /// line, the port) rather than this unit's reply, and what the cycle read before.
    Link {
        why: String,
        line: bool,
        read: Vec<Sample>,
    },
}

enum Data {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

async fn read(ctx: &mut Context, r: &Read) -> tokio_modbus::Result<Data> {
    Ok(match r.table {
        Table::Coil => ctx.read_coils(r.start, r.count).await?.map(Data::Bits),
        Table::DiscreteInput => ctx
            .read_discrete_inputs(r.start, r.count)
            .await?
            .map(Data::Bits),
        Table::Holding => ctx
            .read_holding_registers(r.start, r.count)
            .await?
            .map(Data::Words),
        Table::Input => ctx
            .read_input_registers(r.start, r.count)
            .await?
            .map(Data::Words),
    })
}

fn sample(tag: TagId, d: Decoded, at: Timestamp) -> Sample {
    let (value, quality, status) = match d {
        Ok(v) => (v, Quality::Good, status::GOOD),
        Err(_) => (Value::Empty, Quality::Bad, status::BAD_TYPE_MISMATCH),
    };
    Sample {
        tag,
        value,
        quality,
        status,
        source_time: None,
        server_time: None,
        agent_time: at,
    }
}

impl Unit {
    async fn poll(&mut self, ctx: &mut Context, g: usize) -> Outcome {
        let dev = &self.cfg.device;
        ctx.set_slave(Slave(dev.unit_id));
        let mut out = Vec::new();
        for r in &self.groups[g].reads {
            Stats::add(&self.own.modbus.requests, 1);
            let at = now();
            let res = tokio::time::timeout(dev.timeout(), read(ctx, r)).await;
            let tags = r.tags.iter().map(|&i| &self.cfg.tags[i]);
            // A link problem: why, and whether the connection itself failed.
            let failed = match res {
                Err(_) => {
                    Stats::add(&self.own.modbus.timeouts, 1);
                    Some((
                        format!("no reply within {} ms to a read of {r}", dev.timeout_ms),
                        false,
                    ))
                }
                Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                    Stats::add(&self.own.modbus.mismatched, 1);
                    Some((format!("a reply to another request, discarded: {e}"), false))
                }
                Ok(Err(tokio_modbus::Error::Transport(e))) => {
                    Some((format!("link error: {e}"), true))
                }
                Ok(Ok(Err(code))) => {
                    Stats::add(&self.own.modbus.exceptions, 1);
                    let code = u8::from(code);
                    if self.refused != Some(code) {
                        self.refused = Some(code);
                        warn!(source = %self.cfg.id, read = %r, code, "The Modbus device refused a read (exception); its tags are Bad with this code. Logged once per code.");
                    }
                    out.extend(tags.map(|t| Sample {
                        status: exception_status(code),
                        ..sample(t.tag, Err("exception"), at)
                    }));
                    None
                }
                Ok(Ok(Ok(data))) => {
                    let short = match &data {
                        Data::Bits(b) => b.len() < usize::from(r.count),
                        Data::Words(w) => w.len() < usize::from(r.count),
                    };
                    if short {
                        Some((format!("a short reply to a read of {r}"), false))
                    } else {
                        for t in tags {
                            let off = usize::from(t.spec.address - r.start);
                            let d = match &data {
                                Data::Bits(b) => decode::bit(b[off]),
                                Data::Words(w) => decode::registers(
                                    &t.spec,
                                    &w[off..off + usize::from(t.spec.width())],
                                ),
                            };
                            out.push(sample(t.tag, d, at));
                        }
                        None
                    }
                }
            };
            if let Some((why, line)) = failed {
                return Outcome::Link {
                    why,
                    line,
                    read: out,
                };
            }
        }
        Outcome::Data(out)
    }
}

/// Where the bus is, for logs.
fn describe(d: &ModbusDeviceConfig) -> String {
    match d.transport {
        Transport::Tcp => format!("tcp://{}:{}", d.host.as_deref().unwrap_or_default(), d.port),
        Transport::Rtu => format!(
            "rtu:{}",
            d.serial
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        ),
    }
}

async fn connect(d: &ModbusDeviceConfig) -> Result<Context, String> {
    let slave = Slave(d.unit_id);
    match d.transport {
        Transport::Tcp => {
            let host = d.host.clone().unwrap_or_default();
            let fut = async {
                let stream = tokio::net::TcpStream::connect((host.as_str(), d.port)).await?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(tokio_modbus::client::tcp::attach_slave(stream, slave))
            };
            match tokio::time::timeout(d.timeout(), fut).await {
                Ok(Ok(ctx)) => Ok(ctx),
                Ok(Err(e)) => Err(format!("cannot connect: {e}")),
                Err(_) => Err(format!("no connection within {} ms", d.timeout_ms)),
            }
        }
        Transport::Rtu => {
            use tokio_serial::SerialPortBuilderExt;
            let path = d.serial.clone().unwrap_or_default();
            let port = tokio_serial::new(path.to_string_lossy(), d.baud)
                .parity(match d.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(match d.data_bits {
                    5 => tokio_serial::DataBits::Five,
                    6 => tokio_serial::DataBits::Six,
                    7 => tokio_serial::DataBits::Seven,
                    _ => tokio_serial::DataBits::Eight,
                })
                .stop_bits(if d.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .open_native_async()
                .map_err(|e| format!("cannot open the serial port: {e}"))?;
            Ok(tokio_modbus::client::rtu::attach_slave(port, slave))
        }
    }
}

impl ModbusBus {
    pub async fn run(
        self,
        out: mpsc::Sender<SourceMsg>,
        stats: Arc<Stats>,
        stop: CancellationToken,
    ) {
        let d = self.units[0].device.clone();
        let rtu = d.transport == Transport::Rtu;
        let link = describe(&d);
        let mut backoff = Backoff::new(
            Duration::from_millis(d.retry_initial_ms),
            Duration::from_millis(d.retry_max_ms),
        );
        let mut units: Vec<Unit> = self
            .units
            .into_iter()
            .map(|u| Unit::new(u, &stats))
            .collect();
        'connect: loop {
            let attempt = tokio::select! {
                _ = stop.cancelled() => return,
                r = connect(&d) => r,
            };
            let mut ctx = match attempt {
                Ok(ctx) => ctx,
                Err(why) => {
                    for u in &mut units {
                        if !link_lost(u, &out, &stats, &why).await {
                            return;
                        }
                    }
                    let wait = backoff.next_delay();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => continue 'connect,
                    }
                }
            };
            info!(link = %link, units = units.len(), "Modbus link open; polling.");
            loop {
                for u in &mut units {
                    if let Some(rx) = &mut u.cfg.reload {
                        if rx.has_changed().unwrap_or(false) {
                            u.cfg.tags = rx.borrow_and_update().clone();
                            u.replan();
                            info!(source = %u.cfg.id, tags = u.cfg.tags.len(), reads = u.groups.iter().map(|g| g.reads.len()).sum::<usize>(), "Modbus tag map reloaded.");
                        }
                    }
                }
                // The earliest due poll of any unit on the bus.
                let next = units
                    .iter()
                    .enumerate()
                    .flat_map(|(ui, u)| u.due.iter().enumerate().map(move |(g, t)| (*t, ui, g)))
                    .min();
                let Some((at, ui, g)) = next else {
                    // No tags (yet): wait for a reload or the stop.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(at) => {}
                }
                let u = &mut units[ui];
                let outcome = u.poll(&mut ctx, g).await;
                u.reschedule(g, Instant::now());
                match outcome {
                    Outcome::Data(samples) => {
                        if !answered(u, &out, &stats, samples).await {
                            return;
                        }
                        backoff.reset();
                    }
                    Outcome::Link { why, line, read } => {
                        // What the cycle read before the failure is kept.
                        if !read.is_empty() && !answered(u, &out, &stats, read).await {
                            return;
                        }
                        // On an RTU line a unit that does not answer is its own problem; any
                        // other failure is the connection's.
                        let one_unit = rtu && !line;
                        if one_unit {
                            if !link_lost(u, &out, &stats, &why).await {
                                return;
                            }
                            continue;
                        }
                        warn!(link = %link, error = %why, "Modbus link problem: reconnecting.");
                        for u in &mut units {
                            if !link_lost(u, &out, &stats, &why).await {
                                return;
                            }
                        }
                        drop(ctx);
                        let wait = backoff.next_delay();
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => continue 'connect,
                        }
                    }
                }
            }
        }
    }
}

/// A unit's link is lost: its tags go Bad (once per outage) and the reason is a problem on
/// `/readyz`. False when the pipeline is gone.
async fn link_lost(u: &mut Unit, out: &mpsc::Sender<SourceMsg>, stats: &Stats, why: &str) -> bool {
    if !u.outage.is_down() {
        warn!(source = %u.cfg.id, device = %u.cfg.device_name, error = %why, "Modbus device not answering: its tags are Bad until it does.");
        stats.count(&u.own, crate::stats::SourceEvent::Reconnect, 1);
        stats.problem(
            &u.component(),
            Some(format!("Modbus device {}: {why}", u.cfg.device_name)),
        );
    }
    u.outage.begin(out, &u.cfg.id, &u.ids, why, now()).await
}

/// The device answered (data or exceptions): an open outage closes with its gap, then the
/// samples go. False when the pipeline is gone.
async fn answered(
    u: &mut Unit,
    out: &mpsc::Sender<SourceMsg>,
    stats: &Stats,
    samples: Vec<Sample>,
) -> bool {
    crate::stats::SourceStats {
        all: stats,
        own: &u.own,
    }
    .link_up();
    if let Some(gap) = u.outage.end(&u.cfg.id, &u.ids, now()) {
        info!(source = %u.cfg.id, device = %u.cfg.device_name, "Modbus device answering again; the outage is recorded as a gap.");
        stats.problem(&u.component(), None);
        stats.count(&u.own, crate::stats::SourceEvent::Gap, 1);
        if out.send(SourceMsg::Gap(gap)).await.is_err() {
            return false;
        }
    }
    if samples.is_empty() {
        return true;
    }
    if samples.iter().all(|s| s.quality == Quality::Good) {
        u.refused = None;
    }
    stats.count(
        &u.own,
        crate::stats::SourceEvent::Samples,
        samples.len() as u64,
    );
    for batch in crate::batches(samples, u.cfg.max_batch_samples) {
        if out.send(SourceMsg::Samples(batch)).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cadence_does_not_drift_and_an_overrun_skips_instead_of_piling_up() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // A 30 ms poll of a 100 ms interval: due again at +100, not at +130.
        assert_eq!(next_due(t0, ms(100), t0 + ms(30)), (t0 + ms(100), 0));
        // 1,000 cycles of varying length stay on the grid.
        let mut due = t0;
        for i in 0..1_000u64 {
            let (next, skipped) = next_due(due, ms(100), due + ms(i % 90));
            assert_eq!(skipped, 0);
            due = next;
        }
        assert_eq!(due, t0 + ms(100_000));
        // A 350 ms cycle: the polls due at +100, +200 and +300 are skipped; the next is +400.
        assert_eq!(next_due(t0, ms(100), t0 + ms(350)), (t0 + ms(400), 3));
        // Exactly on the boundary counts as missed (it would start late).
        assert_eq!(next_due(t0, ms(100), t0 + ms(100)), (t0 + ms(200), 1));
    }
}
