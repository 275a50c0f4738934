//! Telling systemd where the agent is in its life (`Type=notify` units). Outside
//! systemd (`NOTIFY_SOCKET` unset) these do nothing.

/// Startup is done: collectors and export are running.
pub fn notify_ready() {
    notify(sd_notify::NotifyState::Ready);
}

/// Shutdown has begun.
pub fn notify_stopping() {
    notify(sd_notify::NotifyState::Stopping);
}

fn notify(state: sd_notify::NotifyState<'_>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(false, &[state]) {
        tracing::warn!("cannot notify systemd: {error}");
    }
}
