//! Host-side bindings of the WIT contract in `wit/` (one `bindgen!` for the crate).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "alert-rule",
    imports: { default: tracing },
});
