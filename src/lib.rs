//! meshmetrics: a lightweight OpenTelemetry-compatible metrics agent for Flagger + Istio.
//!
//! See ARCHITECTURE.md for the map of modules.

pub mod agent;
pub mod auth;
pub mod canary;
pub mod clock;
pub mod config;
pub mod exporters;
pub mod extensions;
pub mod features;
pub mod google_rpc;
pub mod http_server;
pub mod logging;
pub mod model;
pub mod pipeline;
pub mod processors;
pub mod promql;
pub mod receivers;
pub mod service;
pub mod store;
pub mod telemetry;
