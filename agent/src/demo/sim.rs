//! A simulated fluid-bed granulator publishing to the embedded broker, in the formats real
//! gateways use: JSON with value, timestamp and quality for the temperature transmitters, bare
//! numbers for the others.
//!
//! One batch cycle is 60 s: pre-heat (0–10 s), spraying (10–40 s: bed moisture rises, product
//! temperature falls) and drying (40–60 s: moisture falls, product temperature rises).
//! Injected faults, seeded so every run is the same: inlet-air temperature excursions of
//! +14 °C for 5 s every 15 s, a transmitter that sends `ERR` once every 15 s, and a product
//! temperature that overshoots during drying.

use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
        let cycle = t % 60.0;
        let spraying = (10.0..40.0).contains(&cycle);
        let drying = cycle >= 40.0;
        let excursion = if (t % 15.0) > 7.0 && (t % 15.0) < 12.0 {
            14.0
        } else {
            0.0
        };
        let inlet = 62.0 + excursion + self.noise(0.4);
        let spray = if spraying {
            180.0 + self.noise(3.0)
        } else {
            0.0
        };
        let moisture = if spraying {
            3.0 + (cycle - 10.0) * 0.5
        } else if drying {
            18.0 - (cycle - 40.0) * 0.75
        } else {
            3.0
        } + self.noise(0.1);
        let product = if spraying {
            38.0 - (cycle - 10.0) * 0.15
        } else if drying {
            33.5 + (cycle - 40.0) * 0.75
        } else {
            36.0
        } + self.noise(0.2);
        let airflow = 1_200.0 + self.noise(15.0);
        [inlet, product, airflow, spray, moisture.max(0.0)]
    }
}

fn json(v: f64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(r#"{{"v":{v:.3},"ts":{ms},"q":"good"}}"#)
}

pub async fn run(port: u16, stop: CancellationToken) {
    let mut opts = MqttOptions::new("pdtf-demo-simulator", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    // The event loop must be polled for publishes to go out; its errors just mean "retry".
    let pump = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
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
        let t = n as f64 * PERIOD.as_secs_f64();
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

/// The granulator's PLC: spray pump, fan, batch id and an NIR spectrum, in the simulated
/// OPC UA server's `Granulator` folder.
pub fn plc_options() -> crate::opcua_sim::SimOptions {
    use opcua::types::Variant;
    crate::opcua_sim::SimOptions {
        port: 0,
        pki_dir: std::env::temp_dir().join(format!("pdtf-demo-plc-pki-{}", std::process::id())),
        folder: "Granulator".into(),
        variables: vec![
            ("SprayPumpSpeed".into(), Variant::Double(55.0)),
            ("FanRunning".into(), Variant::Boolean(true)),
            ("BatchId".into(), Variant::String("GR-2026-0142".into())),
            ("NirSpectrum".into(), Variant::from(vec![0.0f64; 8])),
        ],
        ..Default::default()
    }
}

/// Updates the PLC's variables every 500 ms; every 40 s the spray pump overspeeds for a
/// while (a hi alarm) and once reports `UncertainSensorNotAccurate`.
pub async fn run_plc(
    plc: crate::opcua_sim::SimServer,
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
