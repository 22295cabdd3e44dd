//! Helpers shared by the integration tests: a real OpenLDAP server.
pub mod slapd;
