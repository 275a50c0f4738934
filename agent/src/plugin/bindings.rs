//! Host-side bindings of every plugin contract version the agent accepts: the current
//! `vigil:plugin@0.2.0` in `wit/` and the previous `0.1.0` in `wit/v0.1.0/` (adapted in
//! [`super::legacy`]).

/// Contract versions the agent loads, newest first.
pub const ACCEPTED_VERSIONS: [&str; 2] = ["0.2.0", "0.1.0"];

/// `vigil:plugin@0.2.0`, the current contract.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alert-rule",
        imports: { default: tracing },
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
