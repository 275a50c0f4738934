//! Shared by the benches: a mean time per iteration kept beside criterion's own
//! estimate, so a bench can print its result as a ratio (to a target, or to another
//! function measured in the same run).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Total time and iterations of every run criterion made of one function (warm-up
/// included): their quotient is the mean time per iteration.
#[derive(Default)]
pub struct Mean {
    total: Cell<Duration>,
    iterations: Cell<u64>,
}

impl Mean {
    /// Runs `routine` `iterations` times, adds the elapsed time to the mean and returns
    /// it (what `criterion::Bencher::iter_custom` wants).
    pub fn time<T>(&self, iterations: u64, mut routine: impl FnMut() -> T) -> Duration {
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(routine());
        }
        let elapsed = start.elapsed();
        self.total.set(self.total.get() + elapsed);
        self.iterations.set(self.iterations.get() + iterations);
        elapsed
    }

    /// Seconds per iteration (NaN before the first run).
    pub fn seconds(&self) -> f64 {
        self.total.get().as_secs_f64() / self.iterations.get() as f64
    }

    /// `elements` per iteration as a rate per second.
    pub fn per_second(&self, elements: usize) -> f64 {
        elements as f64 / self.seconds()
    }
}

/// `value` in millions, e.g. `2.35 M`.
pub fn millions(value: f64) -> String {
    format!("{:.2} M", value / 1e6)
}
