//! A simulated fluid-bed granulator publishing to the embedded broker, in the formats real
//! gateways use: JSON with value, timestamp and quality for the temperature transmitters, bare
//! numbers for the others.
//!
//! One batch is 60 s: preheat (0–8 s: product temperature rises), spraying (8–32 s: bed
//! moisture rises, product temperature falls), drying (32–48 s: moisture falls, product
//! temperature rises and overshoots), cooling (48–56 s: product temperature falls) and
//! discharge (56–60 s: the fan throttles back). The PLC publishes the batch id and the phase
//! number over OPC UA, as real ones do: no batch id in the first cycle (the demo's MES starts
//! that batch with an MQTT command), then `GR-2026-0142`, `GR-2026-0143`, …, with phase 0 for
//! the half second between batches. Injected faults, seeded so every run is the same:
//! inlet-air temperature excursions of +14 °C for 5 s every 15 s, a transmitter that sends
//! `ERR` once every 15 s, and the product temperature overshoot at the end of drying.

use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Topics of the simulated line; `config/demo.toml` maps them.
pub const TOPIC_PREFIX: &str = "plant/gran1";
const PERIOD: Duration = Duration::from_millis(100);

struct Line {
    rng: fastrand::Rng,
}

impl Line {
    fn noise(&mut self, sd: f64) -> f64 {
        // Box–Muller: a normal deviate from two uniform ones.
        let u1 = self.rng.f64().max(1e-12);
        let u2 = self.rng.f64();
        sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Values at `t` seconds since start: (inlet °C, product °C, airflow m³/h, spray g/min, moisture %).
    fn values(&mut self, t: f64) -> [f64; 5] {
        let c = t % CYCLE_S;
        let excursion = if (t % 15.0) > 7.0 && (t % 15.0) < 12.0 {
            14.0
        } else {
            0.0
        };
        let (product, moisture, spray, airflow) = match phase_at(c) {
            1 => (30.0 + c * 0.75, 3.0, 0.0, 1_200.0),
            2 => (
                36.0 - (c - 8.0) * 0.12,
                3.0 + (c - 8.0) * 0.6,
                180.0,
                1_250.0,
            ),
            3 => (
                33.2 + (c - 32.0) * 0.82,
                17.4 - (c - 32.0) * 0.9,
                0.0,
                1_300.0,
            ),
            4 => (
                46.3 - (c - 48.0) * 1.6,
                3.0 - (c - 48.0) * 0.02,
                0.0,
                1_200.0,
            ),
            _ => (33.5, 2.8, 0.0, 1_050.0),
        };
        let spray = if spray > 0.0 {
            spray + self.noise(3.0)
        } else {
            0.0
        };
        [
            62.0 + excursion + self.noise(0.4),
            product + self.noise(0.2),
            airflow + self.noise(15.0),
            spray,
            (moisture + self.noise(0.1)).max(0.0),
        ]
    }
}

/// One batch's length, in seconds.
pub const CYCLE_S: f64 = 60.0;

/// The PLC's phase number `c` seconds into a batch: 1 preheat, 2 spraying, 3 drying,
/// 4 cooling, 5 discharge; 0 in the first half second (between batches).
pub fn phase_at(c: f64) -> i32 {
    match c {
        c if c < 0.5 => 0,
        c if c < 8.0 => 1,
        c if c < 32.0 => 2,
        c if c < 48.0 => 3,
        c if c < 56.0 => 4,
        _ => 5,
    }
}

/// The PLC's batch id in cycle `k`: none in the first (the MES starts that batch), then
/// `GR-2026-0142`, ….
pub fn batch_id_at(k: u64) -> String {
    if k == 0 {
        String::new()
    } else {
        format!("GR-2026-{:04}", 141 + k)
    }
}

fn json(v: f64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(r#"{{"v":{v:.3},"ts":{ms},"q":"good"}}"#)
}

/// An MQTT client of the embedded broker, with the task that drives it (abort it when done).
pub fn client(id: &str, port: u16, cap: usize) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, cap);
    // The event loop must be polled for publishes to go out; its errors just mean "retry".
    let pump = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    (client, pump)
}

pub async fn run(port: u16, started: Instant, stop: CancellationToken) {
    let (client, pump) = client("pdtf-demo-simulator", port, 256);
    let mut line = Line {
        rng: fastrand::Rng::with_seed(42),
    };
    let mut tick = tokio::time::interval(PERIOD);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t = started.elapsed().as_secs_f64();
        n += 1;
        let [inlet, product, airflow, spray, moisture] = line.values(t);
        let fault = n % 150 == 60;
        let messages = [
            ("inlet_air_temp", json(inlet)),
            ("product_temp", json(product)),
            ("airflow", format!("{airflow:.1}")),
            ("spray_rate", format!("{spray:.1}")),
            (
                "bed_moisture",
                if fault {
                    "ERR".to_owned()
                } else {
                    format!("{moisture:.2}")
                },
            ),
        ];
        for (tag, payload) in messages {
            if client
                .publish(
                    format!("{TOPIC_PREFIX}/{tag}"),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .is_err()
            {
                break;
            }
        }
    }
    pump.abort();
}

/// The granulator's PLC: spray pump, fan, batch id, phase number and an NIR spectrum, in the
/// simulated OPC UA server's `Granulator` folder.
pub fn plc_options() -> crate::opcua_sim::SimOptions {
    use opcua::types::Variant;
    crate::opcua_sim::SimOptions {
        port: 0,
        pki_dir: std::env::temp_dir().join(format!("pdtf-demo-plc-pki-{}", std::process::id())),
        folder: "Granulator".into(),
        variables: vec![
            ("SprayPumpSpeed".into(), Variant::Double(55.0)),
            ("FanRunning".into(), Variant::Boolean(true)),
            ("BatchId".into(), Variant::String(String::new().into())),
            ("Phase".into(), Variant::Int32(0)),
            ("NirSpectrum".into(), Variant::from(vec![0.0f64; 8])),
        ],
        ..Default::default()
    }
}

/// Updates the PLC's variables every 500 ms (the batch id and phase on the batch clock
/// `started`); every 40 s the spray pump overspeeds for a while (a hi alarm) and once
/// reports `UncertainSensorNotAccurate`.
pub async fn run_plc(
    plc: crate::opcua_sim::SimServer,
    started: Instant,
    stop: CancellationToken,
) -> crate::opcua_sim::SimServer {
    use opcua::types::{StatusCode, Variant};
    let mut rng = fastrand::Rng::with_seed(7);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let phase = n % 80;
        let speed = if (50..58).contains(&phase) {
            66.0
        } else {
            55.0
        } + rng.f64()
            - 0.5;
        let status = if phase == 30 {
            StatusCode::UncertainSensorNotAccurate
        } else {
            StatusCode::Good
        };
        plc.set("SprayPumpSpeed", Variant::Double(speed), status);
        let moisture = 8.0 - (n as f64 / 200.0).min(6.0);
        let spectrum: Vec<f64> = (0..8)
            .map(|b| 0.2 + moisture * 0.02 * (b as f64 / 8.0) + rng.f64() * 0.005)
            .collect();
        plc.set("NirSpectrum", Variant::from(spectrum), StatusCode::Good);
        let t = started.elapsed().as_secs_f64();
        let id = batch_id_at((t / CYCLE_S) as u64);
        plc.set("BatchId", Variant::String(id.into()), StatusCode::Good);
        plc.set(
            "Phase",
            Variant::Int32(phase_at(t % CYCLE_S)),
            StatusCode::Good,
        );
    }
    plc
}

/// The bowl's load cell and the dehumidifier on the simulated Modbus device: the bowl fills
/// as binder is sprayed (over its 130 kg limit at the end of each 60 s cycle), the dew point
/// wanders around -20 °C.
pub async fn run_scale(
    state: std::sync::Arc<crate::modbus_sim::SimState>,
    stop: CancellationToken,
) {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n: u64 = 0;
    state.coils.lock().expect("sim lock")[0] = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let weight = 100.0 + (n % 240) as f32 * 0.14 + rng.f32() * 0.2;
        let b = weight.to_be_bytes();
        state.set_holding(
            0,
            &[
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            ],
        );
        let dew = -200 + rng.i16(-15..=15);
        state.set_input(0, &[dew as u16]);
    }
}
