//! Empty: this package only pins the WASI adapter crate (see Cargo.toml).
