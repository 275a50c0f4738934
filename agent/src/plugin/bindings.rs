//! Host-side bindings of every plugin contract version the agent accepts: the current
//! `vigil:plugin@0.3.0` in `wit/` (an alert rule or a tuning policy), `0.2.0` in
//! `wit/v0.2.0/` (alert rules; its records are 0.3.0's, so it shares 0.3.0's types) and
//! `0.1.0` in `wit/v0.1.0/` (alert rules, adapted in [`super::legacy`]).

/// Contract versions the agent loads, newest first.
pub const ACCEPTED_VERSIONS: [&str; 3] = ["0.3.0", "0.2.0", "0.1.0"];

/// The worlds the agent loads, per contract version (newest first): what
/// `vigil plugin versions` prints.
pub const ACCEPTED_WORLDS: [(&str, &[&str]); 3] = [
    ("0.3.0", &[ALERT_RULE, TUNING_POLICY]),
    ("0.2.0", &[ALERT_RULE]),
    ("0.1.0", &[ALERT_RULE]),
];

/// The world name of an alert rule.
pub const ALERT_RULE: &str = "alert-rule";
/// The world name of a tuning policy.
pub const TUNING_POLICY: &str = "tuning-policy";

/// `vigil:plugin@0.3.0`, the current contract. Its `types` and `host` interfaces are
/// shared by both worlds: [`v0_3::policy`] reuses this module's.
pub mod v0_3 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alert-rule",
        imports: { default: tracing },
    });

    /// The `tuning-policy` world of 0.3.0, on the alert rule's types and host interface.
    pub mod policy {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "tuning-policy",
            imports: { default: tracing },
            with: {
                "vigil:plugin/types@0.3.0": crate::plugin::bindings::v0_3::vigil::plugin::types,
                "vigil:plugin/host@0.3.0": crate::plugin::bindings::v0_3::vigil::plugin::host,
            },
        });
    }
}

/// `vigil:plugin@0.2.0`, still loaded. The records its alert rules exchange (batch,
/// finding, plugin-info) are the same as 0.3.0's and the component model checks record
/// types by their shape, so 0.3.0's Rust types stand for them: no conversion.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "alert-rule",
        imports: { default: tracing },
        with: {
            "vigil:plugin/types@0.2.0": crate::plugin::bindings::v0_3::vigil::plugin::types,
        },
    });
}

/// `vigil:plugin@0.1.0`, still loaded: its batches are built by [`super::super::legacy`].
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "alert-rule",
        imports: { default: tracing },
    });
}
