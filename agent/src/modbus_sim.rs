//! A simulated Modbus TCP device (tokio-modbus's server) for the demo and the tests: four
//! tables the caller sets, a count of the requests it served, and faults to switch on (an
//! exception for a range, silence, a slow reply).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_modbus::prelude::{ExceptionCode, Request, Response};
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};

const SIZE: usize = 65_536;

/// The device's memory and behaviour, shared with the caller.
#[derive(Debug)]
pub struct SimState {
    pub holding: Mutex<Vec<u16>>,
    pub input: Mutex<Vec<u16>>,
    pub coils: Mutex<Vec<bool>>,
    pub discrete: Mutex<Vec<bool>>,
    /// Read requests served (answered or not).
    pub requests: AtomicU64,
    /// Write requests received (the agent must never send one).
    pub writes: AtomicU64,
    /// Reads touching `[start, end)` of any table get this exception.
    pub refuse: Mutex<Option<(u16, u16, ExceptionCode)>>,
    /// Requests get no reply at all.
    pub silent: AtomicBool,
    /// Every reply waits this long first.
    pub delay_ms: AtomicU64,
}

impl Default for SimState {
    fn default() -> Self {
        Self {
            holding: Mutex::new(vec![0; SIZE]),
            input: Mutex::new(vec![0; SIZE]),
            coils: Mutex::new(vec![false; SIZE]),
            discrete: Mutex::new(vec![false; SIZE]),
            requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            refuse: Mutex::new(None),
            silent: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        }
    }
}

impl SimState {
    /// Sets holding registers from `address` on.
    pub fn set_holding(&self, address: u16, words: &[u16]) {
        let mut h = self.holding.lock().expect("sim lock");
        let a = usize::from(address);
        h[a..a + words.len()].copy_from_slice(words);
    }

    pub fn set_input(&self, address: u16, words: &[u16]) {
        let mut h = self.input.lock().expect("sim lock");
        let a = usize::from(address);
        h[a..a + words.len()].copy_from_slice(words);
    }

    fn answer(&self, req: Request<'_>) -> Result<Option<Response>, ExceptionCode> {
        let (start, count) = match &req {
            Request::ReadCoils(a, n)
            | Request::ReadDiscreteInputs(a, n)
            | Request::ReadHoldingRegisters(a, n)
            | Request::ReadInputRegisters(a, n) => (*a, *n),
            _ => {
                self.writes.fetch_add(1, Relaxed);
                return Err(ExceptionCode::IllegalFunction);
            }
        };
        self.requests.fetch_add(1, Relaxed);
        if self.silent.load(Relaxed) {
            return Ok(None);
        }
        if let Some((lo, hi, code)) = *self.refuse.lock().expect("sim lock") {
            if start < hi && lo < start.saturating_add(count) {
                return Err(code);
            }
        }
        let range = usize::from(start)..usize::from(start) + usize::from(count);
        if range.end > SIZE {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let words = |t: &Mutex<Vec<u16>>| t.lock().expect("sim lock")[range.clone()].to_vec();
        let bits = |t: &Mutex<Vec<bool>>| t.lock().expect("sim lock")[range.clone()].to_vec();
        Ok(Some(match req {
            Request::ReadCoils(..) => Response::ReadCoils(bits(&self.coils)),
            Request::ReadDiscreteInputs(..) => Response::ReadDiscreteInputs(bits(&self.discrete)),
            Request::ReadHoldingRegisters(..) => {
                Response::ReadHoldingRegisters(words(&self.holding))
            }
            _ => Response::ReadInputRegisters(words(&self.input)),
        }))
    }
}

struct Service(Arc<SimState>);

impl tokio_modbus::server::Service for Service {
    type Request = Request<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let delay = state.delay_ms.load(Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            state.answer(req)
        })
    }
}

/// A running simulated device; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct ModbusSim {
    pub port: u16,
    pub state: Arc<SimState>,
    task: tokio::task::JoinHandle<()>,
}

impl ModbusSim {
    /// Listens on `127.0.0.1:port` (0: any free port).
    pub async fn start(port: u16, state: Arc<SimState>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let server = Server::new(listener);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let on_connected = |stream, addr| {
                let s = shared.clone();
                async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(Service(s.clone())))) }
            };
            let _ended = server
                .serve(
                    &on_connected,
                    |e| tracing::debug!(error = %e, "simulated Modbus device: connection ended"),
                )
                .await;
        });
        Ok(Self { port, state, task })
    }
}

impl Drop for ModbusSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
