//! Test fixture: the echo policy (plugins/echo-policy, same settings) built against the
//! previous contract, `vigil:plugin@0.3.0` (wit/v0.3.0), to prove the agent still loads
//! 0.3.0 tuning policies and turns their proposals into 0.4.0 ones.

/// Guest bindings of the vigil:plugin@0.3.0 tuning-policy world.
mod bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({ world: "tuning-policy", path: "../../wit/v0.3.0" });
}

#[path = "../../echo-policy/src/echo.rs"]
mod echo;
