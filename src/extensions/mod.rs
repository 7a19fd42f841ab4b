//! Extensions: `health_check` and `zpages`.

pub mod health_check;
pub mod zpages;

pub use health_check::HealthCheckConfig;
pub use zpages::ZpagesConfig;
