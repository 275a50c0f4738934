//! Host-side bindings of the WIT contract in `wit/` (one `bindgen!` for the crate).

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0",
    world: "alert-rule",
    imports: { default: tracing },
});
