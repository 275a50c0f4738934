//! Host-side bindings of every plugin contract version the agent accepts: the current
//! `vigil:plugin@0.4.0` in `wit/` (an alert rule or a tuning policy), `0.3.0` in
//! `wit/v0.3.0/` (both worlds; its batches are 0.4.0's, its proposals are converted in
//! [`super::legacy`]), `0.2.0` in `wit/v0.2.0/` (alert rules; its records are 0.4.0's) and
//! `0.1.0` in `wit/v0.1.0/` (alert rules, adapted in [`super::legacy`]).

/// Contract versions the agent loads, newest first.
pub const ACCEPTED_VERSIONS: [&str; 4] = ["0.4.0", "0.3.0", "0.2.0", "0.1.0"];

/// The worlds the agent loads, per contract version (newest first): what
/// `vigil plugin versions` prints.
pub const ACCEPTED_WORLDS: [(&str, &[&str]); 4] = [
    ("0.4.0", &[ALERT_RULE, TUNING_POLICY]),
    ("0.3.0", &[ALERT_RULE, TUNING_POLICY]),
    ("0.2.0", &[ALERT_RULE]),
    ("0.1.0", &[ALERT_RULE]),
];

/// The world name of an alert rule.
pub const ALERT_RULE: &str = "alert-rule";
/// The world name of a tuning policy.
pub const TUNING_POLICY: &str = "tuning-policy";

/// `vigil:plugin@0.4.0`, the current contract. Its `types` and `host` interfaces are
/// shared by both worlds: [`v0_4::policy`] reuses this module's.
pub mod v0_4 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alert-rule",
        imports: { default: tracing },
    });

    /// The `tuning-policy` world of 0.4.0, on the alert rule's types and host interface.
    pub mod policy {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "tuning-policy",
            imports: { default: tracing },
            with: {
                "vigil:plugin/types@0.4.0": crate::plugin::bindings::v0_4::vigil::plugin::types,
                "vigil:plugin/host@0.4.0": crate::plugin::bindings::v0_4::vigil::plugin::host,
            },
        });
    }
}

/// `vigil:plugin@0.3.0`, still loaded. Every record but the action (0.4.0 added
/// PostgreSQL maintenance actions to its variant) is the same as 0.4.0's, and the component
/// model checks record types by their shape: 0.4.0's Rust types stand for them, and only
/// a 0.3.0 policy's proposals have types of their own ([`v0_3::policy::types`]).
pub mod v0_3 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.3.0",
        world: "alert-rule",
        imports: { default: tracing },
        with: {
            "vigil:plugin/types@0.3.0": crate::plugin::bindings::v0_4::vigil::plugin::types,
        },
    });

    /// The `tuning-policy` world of 0.3.0: 0.4.0's batches, firing alerts and settings,
    /// 0.3.0's own proposals.
    pub mod policy {
        /// 0.3.0's own records, for its proposals (the rest of this module is unused).
        pub mod own {
            wasmtime::component::bindgen!({
                path: "../wit/v0.3.0",
                world: "tuning-policy",
                with: {
                    "vigil:plugin/host@0.3.0": crate::plugin::bindings::v0_3::vigil::plugin::host,
                },
            });
        }

        /// The `types` a 0.3.0 policy exchanges: 0.4.0's, but for the proposal and what it holds.
        pub mod types {
            pub use super::own::vigil::plugin::types::{
                Action, Direction, IntervalChange, Proposal, RevertCondition, SettingChange,
            };
            pub use crate::plugin::bindings::v0_4::vigil::plugin::types::*;
        }

        wasmtime::component::bindgen!({
            path: "../wit/v0.3.0",
            world: "tuning-policy",
            imports: { default: tracing },
            with: {
                "vigil:plugin/types@0.3.0": crate::plugin::bindings::v0_3::policy::types,
                "vigil:plugin/host@0.3.0": crate::plugin::bindings::v0_3::vigil::plugin::host,
            },
        });
    }
}

/// `vigil:plugin@0.2.0`, still loaded. The records its alert rules exchange (batch,
/// finding, plugin-info) are the same as 0.4.0's, so 0.4.0's Rust types stand for them.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "alert-rule",
        imports: { default: tracing },
        with: {
            "vigil:plugin/types@0.2.0": crate::plugin::bindings::v0_4::vigil::plugin::types,
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
