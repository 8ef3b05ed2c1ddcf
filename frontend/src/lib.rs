//! tally-api: the HTTP front end of tally. REST endpoints map onto the module's commands
//! (`METRIC.*`, `RATELIMIT.*`); `/external` is guarded by a circuit breaker.

pub mod apikeys;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod decisions;
pub mod known_types;
pub mod labels;
pub mod payload;
pub mod policies;
pub mod ratelimit;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod top_clients;
pub mod upstream;

#[cfg(test)]
mod layers;
