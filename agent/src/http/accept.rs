//! What the accept loop does after `accept()` fails: back off (10 ms doubling to 1 s) so a
//! lasting failure such as "too many open files" costs no CPU, and tell the operator once
//! per kind of error, and once when connections are accepted again. An outage ends only
//! after [`RECOVERY_QUIET`] without errors: out of descriptors, every connection that
//! closes lets one more in before `accept()` fails again, which is no recovery.

use std::collections::BTreeSet;
use std::io;
use std::time::{Duration, Instant};

/// First pause after a failed `accept()`.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between attempts while `accept()` keeps failing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Time without a failed `accept()` after which an outage is over.
pub const RECOVERY_QUIET: Duration = Duration::from_secs(30);

/// What to do about one failed `accept()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction {
    /// How long to wait before the next `accept()`.
    pub pause: Duration,
    /// Whether this kind of error is new since the last success (log it).
    pub report: bool,
}

/// Errors of the accept loop since its last success.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    backoff: Option<Duration>,
    /// Kinds of error reported in this outage.
    reported: BTreeSet<String>,
    /// The first success since the last failure, while an outage is reported.
    quiet_since: Option<Instant>,
}

/// An error that concerns one incoming connection only (it went away before it was
/// accepted): the next one may be accepted at once.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The kind an error is reported under: its OS error number, else its `ErrorKind`.
fn kind_of(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => format!("os {code}"),
        None => format!("{:?}", error.kind()),
    }
}

impl AcceptErrors {
    /// Records a failed `accept()` and says how long to pause and whether to log it.
    pub fn failed(&mut self, error: &io::Error) -> Reaction {
        if is_per_connection(error) {
            return Reaction {
                pause: Duration::ZERO,
                report: false,
            };
        }
        let pause = match self.backoff {
            None => BACKOFF_MIN,
            Some(last) => (last * 2).min(BACKOFF_MAX),
        };
        self.backoff = Some(pause);
        self.quiet_since = None;
        Reaction {
            pause,
            report: self.reported.insert(kind_of(error)),
        }
    }

    /// Records a successful `accept()` at `now`.
    pub fn accepted(&mut self, now: Instant) {
        self.backoff = None;
        if !self.reported.is_empty() && self.quiet_since.is_none() {
            self.quiet_since = Some(now);
        }
    }

    /// When the outage reported ends if no failure comes first (None: nothing to end).
    pub fn recovery_due(&self) -> Option<Instant> {
        self.quiet_since.map(|since| since + RECOVERY_QUIET)
    }

    /// Ends the outage reported if it was quiet long enough by `now`; true if it did
    /// (log the recovery).
    pub fn recovered(&mut self, now: Instant) -> bool {
        if self.recovery_due().is_some_and(|due| now >= due) {
            self.reported.clear();
            self.quiet_since = None;
            true
        } else {
            false
        }
    }
}

/// A hint for the operator about an accept error, if there is one.
pub fn hint(error: &io::Error) -> &'static str {
    // EMFILE (24) and ENFILE (23): out of file descriptors.
    match error.raw_os_error() {
        Some(23 | 24) => {
            " (out of file descriptors: raise the open-file limit, e.g. LimitNOFILE=, or lower [http] max_connections)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_doubling_up_to_a_second_and_reports_each_kind_once() {
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(24);
        let first = errors.failed(&emfile);
        assert_eq!(
            first,
            Reaction {
                pause: BACKOFF_MIN,
                report: true
            }
        );
        let pauses: Vec<Duration> = (0..10).map(|_| errors.failed(&emfile).pause).collect();
        assert_eq!(pauses[0], BACKOFF_MIN * 2);
        assert_eq!(*pauses.last().unwrap(), BACKOFF_MAX);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert!(!errors.failed(&emfile).report, "one report per kind");
        assert!(errors.failed(&io::Error::from_raw_os_error(105)).report);
    }

    #[test]
    fn an_outage_ends_after_a_quiet_period_not_at_the_first_success() {
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(24);
        let start = Instant::now();
        errors.failed(&emfile);
        errors.accepted(start);
        assert_eq!(errors.recovery_due(), Some(start + RECOVERY_QUIET));
        // A connection closed and let one in, then descriptors ran out again.
        let again = errors.failed(&emfile);
        assert!(!again.report, "the same outage");
        assert_eq!(
            again.pause, BACKOFF_MIN,
            "back-off restarts after a success"
        );
        assert_eq!(errors.recovery_due(), None);
        let later = start + Duration::from_secs(5);
        errors.accepted(later);
        assert!(!errors.recovered(later + RECOVERY_QUIET / 2));
        assert!(errors.recovered(later + RECOVERY_QUIET));
        assert!(
            !errors.recovered(later + RECOVERY_QUIET * 2),
            "recovered once"
        );
        assert!(errors.failed(&emfile).report, "a new outage is reported");
    }

    #[test]
    fn successes_without_an_outage_recover_nothing() {
        let mut errors = AcceptErrors::default();
        let now = Instant::now();
        errors.accepted(now);
        assert_eq!(errors.recovery_due(), None);
        assert!(!errors.recovered(now + RECOVERY_QUIET));
    }

    #[test]
    fn a_connection_gone_before_accept_is_no_outage() {
        let mut errors = AcceptErrors::default();
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(
            errors.failed(&aborted),
            Reaction {
                pause: Duration::ZERO,
                report: false
            }
        );
        assert_eq!(errors.recovery_due(), None);
    }
}
