//! The epoch ticker: advances the engine's epoch every [`EPOCH_TICK`] while at least one
//! plugin call is in flight, and sleeps (no wake-ups at all) while none is.
//!
//! A call's deadline is counted in ticks from the epoch it was armed at
//! ([`wasmtime::Store::set_epoch_deadline`]); since the ticker runs for as long as the call
//! holds its [`InFlight`] guard, a looping plugin is still interrupted at its deadline.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use wasmtime::Engine;

use super::limits::EPOCH_TICK;
use crate::sync::LockExt;

/// What the ticker thread and the call guards share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Plugin calls running now.
    in_flight: usize,
    /// Set when the last [`EpochTicker`] handle is gone: the thread ends.
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked_as("epoch ticker")
    }
}

/// Stops the ticker thread when the last handle is dropped.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.wake.notify_all();
    }
}

/// A handle on the ticker thread of one engine; clones share the thread, which ends
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct EpochTicker {
    owner: Arc<Owner>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`; it waits until a call is in flight.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("vigil-epoch".into())
            .spawn(move || tick_while_calls_run(&thread_shared, &engine))?;
        Ok(EpochTicker {
            owner: Arc::new(Owner(shared)),
        })
    }

    /// Marks a plugin call as running until the guard is dropped: the epoch advances
    /// meanwhile. Take it before entering the plugin.
    pub fn in_flight(&self) -> InFlight {
        let shared = self.owner.0.clone();
        let mut state = shared.lock();
        state.in_flight += 1;
        let first = state.in_flight == 1;
        drop(state);
        if first {
            shared.wake.notify_one();
        }
        InFlight { shared }
    }
}

/// A plugin call in flight (see [`EpochTicker::in_flight`]).
#[derive(Debug)]
#[must_use = "the epoch advances only while the guard is held"]
pub struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// The ticker thread: sleeps on the condition variable while no call runs, ticks while
/// one does, ends when stopped.
fn tick_while_calls_run(shared: &Shared, engine: &Engine) {
    let mut state = shared.lock();
    loop {
        while state.in_flight == 0 && !state.stopped {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.stopped {
            return;
        }
        drop(state);
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
        state = shared.lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).unwrap()
    }

    /// A store armed with a deadline of `ticks` and the exports of a module with a
    /// function that returns at once (`noop`) and one that never does (`spin`).
    fn armed(engine: &Engine, ticks: u64) -> (wasmtime::Store<()>, wasmtime::Instance) {
        let module = wasmtime::Module::new(
            engine,
            r#"(module (func (export "noop")) (func (export "spin") (loop (br 0))))"#,
        )
        .unwrap();
        let mut store = wasmtime::Store::new(engine, ());
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        (store, instance)
    }

    fn call(
        store: &mut wasmtime::Store<()>,
        instance: &wasmtime::Instance,
        name: &str,
    ) -> wasmtime::Result<()> {
        let f = instance.get_typed_func::<(), ()>(&mut *store, name)?;
        f.call(store, ())
    }

    /// Runs `spin` under a deadline of `ticks` with the call marked in flight; the error
    /// it ended with. Panics if it has not ended after a minute (a liveness bound only:
    /// without ticks the call would never end).
    fn spin_until_interrupted(
        engine: &Engine,
        ticker: &EpochTicker,
        ticks: u64,
    ) -> wasmtime::Error {
        let (engine, ticker) = (engine.clone(), ticker.clone());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut store, instance) = armed(&engine, ticks);
            let _call = ticker.in_flight();
            let _ = done_tx.send(call(&mut store, &instance, "spin"));
        });
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the looping call was not interrupted")
            .expect_err("a looping call cannot return")
    }

    fn assert_interrupted(error: &wasmtime::Error) {
        assert_eq!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt),
            "{error:#}"
        );
    }

    #[test]
    fn a_looping_call_is_interrupted_at_its_deadline() {
        let engine = engine();
        let ticker = EpochTicker::start(&engine).unwrap();
        assert_interrupted(&spin_until_interrupted(&engine, &ticker, 3));
    }

    #[test]
    fn the_epoch_stands_still_while_no_call_is_in_flight() {
        let engine = engine();
        let ticker = EpochTicker::start(&engine).unwrap();
        let (mut store, instance) = armed(&engine, 1);
        // Many tick periods with no call in flight: the epoch must not reach the deadline.
        std::thread::sleep(EPOCH_TICK * 20);
        let _call = ticker.in_flight();
        call(&mut store, &instance, "noop").expect("the epoch advanced while idle");
    }

    #[test]
    fn calls_after_an_idle_spell_are_still_interrupted() {
        let engine = engine();
        let ticker = EpochTicker::start(&engine).unwrap();
        for _ in 0..3 {
            assert_interrupted(&spin_until_interrupted(&engine, &ticker, 2));
            std::thread::sleep(EPOCH_TICK * 4);
        }
    }
}
