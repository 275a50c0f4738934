//! A TCP server that accepts connections and never reads or answers: what a hung
//! receiver or database server looks like to the agent.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Accepts on 127.0.0.1 and holds every connection open, silent, until dropped.
pub struct SilentServer {
    pub addr: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl SilentServer {
    /// Starts listening on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (held_by_thread, stop_thread) = (held.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop_thread.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Ok(mut held) = held_by_thread.lock() {
                            held.push(stream);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(SilentServer { addr, held, stop })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Waits up to `timeout` for at least one connection; whether one came.
    pub fn wait_for_connection(&self, timeout: Duration) -> bool {
        let started = std::time::Instant::now();
        while self.connections() == 0 {
            if started.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
